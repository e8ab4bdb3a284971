package diagnose

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestServiceEnvVarsAsKubelet(t *testing.T) {
	tests := []struct {
		name string
		svc  *corev1.Service
		want []corev1.EnvVar
	}{
		{
			name: "unnamed single port: SERVICE_HOST, SERVICE_PORT and the Docker links",
			svc:  backendService(),
			want: []corev1.EnvVar{
				{Name: "BACKEND_SERVICE_HOST", Value: "10.96.0.10"},
				{Name: "BACKEND_SERVICE_PORT", Value: "80"},
				{Name: "BACKEND_PORT", Value: "tcp://10.96.0.10:80"},
				{Name: "BACKEND_PORT_80_TCP", Value: "tcp://10.96.0.10:80"},
				{Name: "BACKEND_PORT_80_TCP_PROTO", Value: "tcp"},
				{Name: "BACKEND_PORT_80_TCP_PORT", Value: "80"},
				{Name: "BACKEND_PORT_80_TCP_ADDR", Value: "10.96.0.10"},
			},
		},
		{
			name: "dashes become underscores, several ports: SERVICE_PORT is the first, each named port gets its own",
			svc: backendService(func(s *corev1.Service) {
				s.Name = "my-backend-svc"
				s.Spec.Ports = []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
					{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP},
					{Port: 9090},
				}
			}),
			want: []corev1.EnvVar{
				{Name: "MY_BACKEND_SVC_SERVICE_HOST", Value: "10.96.0.10"},
				{Name: "MY_BACKEND_SVC_SERVICE_PORT", Value: "80"},
				{Name: "MY_BACKEND_SVC_SERVICE_PORT_HTTP", Value: "80"},
				{Name: "MY_BACKEND_SVC_SERVICE_PORT_DNS_UDP", Value: "53"},
				{Name: "MY_BACKEND_SVC_PORT", Value: "tcp://10.96.0.10:80"},
				{Name: "MY_BACKEND_SVC_PORT_80_TCP", Value: "tcp://10.96.0.10:80"},
				{Name: "MY_BACKEND_SVC_PORT_80_TCP_PROTO", Value: "tcp"},
				{Name: "MY_BACKEND_SVC_PORT_80_TCP_PORT", Value: "80"},
				{Name: "MY_BACKEND_SVC_PORT_80_TCP_ADDR", Value: "10.96.0.10"},
				{Name: "MY_BACKEND_SVC_PORT_53_UDP", Value: "udp://10.96.0.10:53"},
				{Name: "MY_BACKEND_SVC_PORT_53_UDP_PROTO", Value: "udp"},
				{Name: "MY_BACKEND_SVC_PORT_53_UDP_PORT", Value: "53"},
				{Name: "MY_BACKEND_SVC_PORT_53_UDP_ADDR", Value: "10.96.0.10"},
				{Name: "MY_BACKEND_SVC_PORT_9090_TCP", Value: "tcp://10.96.0.10:9090"},
				{Name: "MY_BACKEND_SVC_PORT_9090_TCP_PROTO", Value: "tcp"},
				{Name: "MY_BACKEND_SVC_PORT_9090_TCP_PORT", Value: "9090"},
				{Name: "MY_BACKEND_SVC_PORT_9090_TCP_ADDR", Value: "10.96.0.10"},
			},
		},
		{
			name: "IPv6 ClusterIP: the URL brackets the address",
			svc: backendService(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "fd00:10:96::a", []string{"fd00:10:96::a"}
			}),
			want: []corev1.EnvVar{
				{Name: "BACKEND_SERVICE_HOST", Value: "fd00:10:96::a"},
				{Name: "BACKEND_SERVICE_PORT", Value: "80"},
				{Name: "BACKEND_PORT", Value: "tcp://[fd00:10:96::a]:80"},
				{Name: "BACKEND_PORT_80_TCP", Value: "tcp://[fd00:10:96::a]:80"},
				{Name: "BACKEND_PORT_80_TCP_PROTO", Value: "tcp"},
				{Name: "BACKEND_PORT_80_TCP_PORT", Value: "80"},
				{Name: "BACKEND_PORT_80_TCP_ADDR", Value: "fd00:10:96::a"},
			},
		},
		{
			name: "headless Service: no variables",
			svc: backendService(func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
			}),
		},
		{
			name: "ExternalName Service: no variables",
			svc: backendService(func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example.com", "", nil
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ServiceEnvVars(tt.svc)); diff != "" {
				t.Errorf("ServiceEnvVars (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDNSNames(t *testing.T) {
	tests := []struct {
		name          string
		svc           *corev1.Service
		clusterDomain string
		wantNames     []string
		wantSRV       []string
	}{
		{
			name:      "unnamed port: A names only, default domain",
			svc:       backendService(),
			wantNames: []string{"backend", "backend.shop", "backend.shop.svc.cluster.local"},
		},
		{
			name: "named ports get SRV records with the protocol lower-cased; unnamed ones do not",
			svc: backendService(func(s *corev1.Service) {
				s.Name = "my-backend"
				s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 9090}}
			}),
			clusterDomain: "corp.internal",
			wantNames:     []string{"my-backend", "my-backend.shop", "my-backend.shop.svc.corp.internal"},
			wantSRV:       []string{"_http._tcp.my-backend.shop.svc.corp.internal", "_dns._udp.my-backend.shop.svc.corp.internal"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.wantNames, DNSNames(tt.svc, tt.clusterDomain)); diff != "" {
				t.Errorf("DNSNames (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSRV, SRVNames(tt.svc, tt.clusterDomain)); diff != "" {
				t.Errorf("SRVNames (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodServiceEnvVarsAsKubelet(t *testing.T) {
	inNamespace := func(ns, name, ip string) *corev1.Service {
		return backendService(func(s *corev1.Service) {
			s.Namespace, s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = ns, name, ip, []string{ip}
		})
	}
	kubernetes := inNamespace("default", "kubernetes", "10.96.0.1")
	backend := inNamespace(testNamespace, "backend", "10.96.0.20")
	elsewhere := inNamespace("other", "cache", "10.96.0.30")
	headless := backendService(func(s *corev1.Service) {
		s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = "db", corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	})
	names := func(vars []corev1.EnvVar) []string {
		var out []string
		for _, v := range vars {
			if strings.HasSuffix(v.Name, "_SERVICE_HOST") {
				out = append(out, v.Name+"="+v.Value)
			}
		}
		return out
	}
	tests := []struct {
		name               string
		namespace          string
		enableServiceLinks bool
		services           []*corev1.Service
		want               []string
	}{
		{
			name:      "the pod's namespace and the API server's Service; not other namespaces, not headless",
			namespace: testNamespace, enableServiceLinks: true,
			services: []*corev1.Service{kubernetes, backend, elsewhere, headless},
			want:     []string{"BACKEND_SERVICE_HOST=10.96.0.20", "KUBERNETES_SERVICE_HOST=10.96.0.1"},
		},
		{
			name:      "enableServiceLinks false: only the API server's Service",
			namespace: testNamespace, enableServiceLinks: false,
			services: []*corev1.Service{kubernetes, backend},
			want:     []string{"KUBERNETES_SERVICE_HOST=10.96.0.1"},
		},
		{
			name:      "a pod in default sees its namespace's Services as any other",
			namespace: "default", enableServiceLinks: true,
			services: []*corev1.Service{kubernetes, inNamespace("default", "web", "10.96.0.40"), backend},
			want:     []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "WEB_SERVICE_HOST=10.96.0.40"},
		},
		{
			name:      "a Service named kubernetes in the pod's namespace wins over the API server's",
			namespace: testNamespace, enableServiceLinks: true,
			services: []*corev1.Service{inNamespace(testNamespace, "kubernetes", "10.96.0.50"), kubernetes},
			want:     []string{"KUBERNETES_SERVICE_HOST=10.96.0.50"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PodServiceEnvVars(tt.namespace, tt.enableServiceLinks, tt.services)
			if diff := cmp.Diff(tt.want, names(got)); diff != "" {
				t.Errorf("PodServiceEnvVars (-want +got):\n%s", diff)
			}
			if !slices.IsSortedFunc(got, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("not sorted by name: %v", got)
			}
		})
	}
}
