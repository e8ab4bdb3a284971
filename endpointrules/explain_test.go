package endpointrules

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

var backendLabels = map[string]string{"app": "backend"}

// backendService selects app=backend in namespace shop, port 80 -> 8080.
func backendService(edits ...func(*corev1.Service)) *corev1.Service {
	return kit.MakeService("backend", "shop").Selector(backendLabels).TCPPort("", 80, 8080).Mutate(edits...).Obj()
}

// testPod is a running pod of namespace shop declaring the ports; ready or not.
func testPod(name, ip string, labels map[string]string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	return kit.MakePod(name, "shop").Labels(labels).IPs(ip).Ready(ready).ContainerPorts(ports...).Obj()
}

func TestSelectorMatchesNoPod(t *testing.T) {
	tests := []struct {
		name        string
		svc         *corev1.Service
		pods        []*corev1.Pod
		wantFound   bool
		wantMessage string
	}{
		{
			name:      "a matching pod: nothing to report",
			svc:       backendService(),
			pods:      []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true)},
			wantFound: false,
		},
		{
			name:      "selectorless Service: its endpoints are the user's, nothing to report",
			svc:       backendService(func(s *corev1.Service) { s.Spec.Selector = nil }),
			wantFound: false,
		},
		{
			name:        "no pod at all",
			svc:         backendService(),
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop",
		},
		{
			name: "a value typo names the pod and the differing label",
			svc:  backendService(),
			pods: []*corev1.Pod{
				testPod("backend-0", "10.244.1.10", map[string]string{"app": "backnd"}, true),
				testPod("frontend-0", "10.244.1.11", map[string]string{"app": "frontend"}, true),
			},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop; closest: pod backend-0 has app=backnd (selector wants app=backend)",
		},
		{
			name:        "a key typo",
			svc:         backendService(),
			pods:        []*corev1.Pod{testPod("backend-0", "10.244.1.10", map[string]string{"ap": "backend"}, true)},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop; closest: pod backend-0 has ap=backend (selector wants app=backend)",
		},
		{
			name:        "a case slip",
			svc:         backendService(),
			pods:        []*corev1.Pod{testPod("backend-0", "10.244.1.10", map[string]string{"app": "Backend"}, true)},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop; closest: pod backend-0 has app=Backend (selector wants app=backend)",
		},
		{
			name: "several pods with the same typo are grouped",
			svc:  backendService(),
			pods: []*corev1.Pod{
				testPod("backend-0", "10.244.1.10", map[string]string{"app": "backnd"}, true),
				testPod("backend-1", "10.244.1.11", map[string]string{"app": "backnd"}, true),
			},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop; closest: pods backend-0, backend-1 have app=backnd (selector wants app=backend)",
		},
		{
			name: "two-label selector: one label missing while the other matches is a near miss",
			svc:  backendService(func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "backend", "tier": "api"} }),
			pods: []*corev1.Pod{
				testPod("backend-0", "10.244.1.10", map[string]string{"app": "backend"}, true),
				testPod("backend-1", "10.244.1.11", map[string]string{"app": "backend", "tier": "web"}, true),
			},
			wantFound: true,
			wantMessage: "selector app=backend,tier=api matches no pod in namespace shop; closest: pod backend-0 lacks label tier (selector wants tier=api); " +
				"pod backend-1 has tier=web (selector wants tier=api)",
		},
		{
			name:        "an unrelated single-label value is no near miss",
			svc:         backendService(),
			pods:        []*corev1.Pod{testPod("frontend-0", "10.244.1.10", map[string]string{"app": "frontend"}, true)},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop",
		},
		{
			name:        "pods of other namespaces are not near misses here",
			svc:         backendService(),
			pods:        []*corev1.Pod{kit.MakePod("backend-0", "other").Labels(map[string]string{"app": "backnd"}).IPs("10.244.1.10").Ready(true).Obj()},
			wantFound:   true,
			wantMessage: "selector app=backend matches no pod in namespace shop",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			message, found := SelectorMatchesNoPod(tt.svc, tt.pods)
			if found != tt.wantFound || message != tt.wantMessage {
				t.Errorf("SelectorMatchesNoPod = (%q, %t), want (%q, %t)", message, found, tt.wantMessage, tt.wantFound)
			}
		})
	}
}

func TestTargetPortUnresolved(t *testing.T) {
	namedHTTP := func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}
	}
	tests := []struct {
		name        string
		svc         *corev1.Service
		pods        []*corev1.Pod
		wantFound   bool
		wantMessage string
	}{
		{
			name:      "numeric targetPort: never reported, even undeclared",
			svc:       backendService(),
			pods:      []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true)},
			wantFound: false,
		},
		{
			name:      "named targetPort declared by every pod",
			svc:       backendService(namedHTTP),
			pods:      []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true, kit.TCPContainerPort("http", 8080))},
			wantFound: false,
		},
		{
			name: "named targetPort missing on some pods",
			svc:  backendService(namedHTTP),
			pods: []*corev1.Pod{
				testPod("backend-0", "10.244.1.10", backendLabels, true, kit.TCPContainerPort("http", 8080)),
				testPod("backend-1", "10.244.1.11", backendLabels, true, kit.TCPContainerPort("web", 8080)),
			},
			wantFound:   true,
			wantMessage: `targetPort "http" of port 80/TCP (web) is declared by no container port of 1 of 2 selected pods: backend-1 (backend-1 declares web 8080/TCP)`,
		},
		{
			name:        "named targetPort missing on every pod",
			svc:         backendService(namedHTTP),
			pods:        []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true)},
			wantFound:   true,
			wantMessage: `targetPort "http" of port 80/TCP (web) is declared by no container port of any selected pod: backend-0 (backend-0 declares no ports)`,
		},
		{
			name: "same name with another protocol does not resolve",
			svc:  backendService(namedHTTP),
			pods: []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true,
				corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolUDP})},
			wantFound:   true,
			wantMessage: `targetPort "http" of port 80/TCP (web) is declared by no container port of any selected pod: backend-0 (backend-0 declares http 8080/UDP)`,
		},
		{
			name: "a restartable init container (sidecar) may declare it",
			svc:  backendService(namedHTTP),
			pods: func() []*corev1.Pod {
				pod := testPod("backend-0", "10.244.1.10", backendLabels, true)
				always := corev1.ContainerRestartPolicyAlways
				pod.Spec.InitContainers = []corev1.Container{{Name: "proxy", RestartPolicy: &always, Ports: []corev1.ContainerPort{kit.TCPContainerPort("http", 15001)}}}
				return []*corev1.Pod{pod}
			}(),
			wantFound: false,
		},
		{
			name: "pods that finished are not asked",
			svc:  backendService(namedHTTP),
			pods: func() []*corev1.Pod {
				pod := testPod("job-0", "10.244.1.10", backendLabels, false)
				pod.Status.Phase = corev1.PodSucceeded
				return []*corev1.Pod{pod}
			}(),
			wantFound: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			message, found := TargetPortUnresolved(tt.svc, tt.pods)
			if found != tt.wantFound || message != tt.wantMessage {
				t.Errorf("TargetPortUnresolved = (%q, %t), want (%q, %t)", message, found, tt.wantMessage, tt.wantFound)
			}
		})
	}
}
