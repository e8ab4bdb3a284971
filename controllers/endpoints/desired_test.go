package endpoints

import (
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestDesiredEndpointsFromPods(t *testing.T) {
	sidecar := corev1.ContainerRestartPolicyAlways
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	cases := []struct {
		name        string
		svc         *corev1.Service
		pods        []*corev1.Pod
		nodes       map[string]*corev1.Node // defaultNodes when nil
		wantSubsets []string
		wantGroups  []string
		wantUnknown []string
		check       func(t *testing.T, subsets []corev1.EndpointSubset, groups []EndpointGroup)
	}{
		{
			name:        "a ready pod is a ready address and a ready, serving endpoint",
			svc:         service(),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]"},
		},
		{
			name:        "a pod that is not ready is a not-ready address and an endpoint neither ready nor serving",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), notReady)),
			wantSubsets: []string{"ready= notReady=10.0.0.1 ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[---]"},
		},
		{
			name:        "a pod without an IP is not published",
			svc:         service(),
			pods:        pods(pod("a")),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a succeeded pod is not published",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), phase(corev1.PodSucceeded))),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a failed pod is not published",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), phase(corev1.PodFailed))),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a pending pod with an IP that is not ready is published as not ready",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), phase(corev1.PodPending), notReady)),
			wantSubsets: []string{"ready= notReady=10.0.0.1 ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[---]"},
		},
		{
			name:        "a pod in another namespace is not selected",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), inNamespace("other"))),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a pod whose labels do not match the selector is not selected",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), labelled(map[string]string{"app": "db"}))),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a Service without a selector selects no pod",
			svc:         service(withoutSelector),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a terminating pod leaves the Endpoints and stays in slices as serving and terminating, not ready",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), terminating), pod("b", "10.0.0.2")),
			wantSubsets: []string{"ready=10.0.0.2 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[-ST],10.0.0.2[RS-]"},
		},
		{
			name:        "a terminating pod that is no longer ready is neither serving nor ready",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), terminating, notReady)),
			wantSubsets: []string{},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[--T]"},
		},
		{
			name:        "publishNotReadyAddresses publishes a pod that is not ready as ready in both APIs",
			svc:         service(withPublishNotReady),
			pods:        pods(podWith(pod("a", "10.0.0.1"), notReady)),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[R--]"},
		},
		{
			name:        "publishNotReadyAddresses keeps a terminating pod in the Endpoints and ready in slices",
			svc:         service(withPublishNotReady),
			pods:        pods(podWith(pod("a", "10.0.0.1"), terminating)),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RST]"},
		},
		{
			name:        "a numeric targetPort is used as is",
			svc:         service(withPorts(svcPort("http", 80, intstr.FromInt32(9090), tcp))),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:9090/TCP"},
			wantGroups:  []string{"IPv4 ports=http:9090/TCP eps=10.0.0.1[RS-]"},
		},
		{
			name: "a named targetPort resolves per pod, and pods that disagree get their own subset and slice group",
			svc:  service(withPorts(svcPort("http", 80, intstr.FromString("web"), tcp))),
			pods: pods(
				podWith(pod("a", "10.0.0.1"), containerPorts(corev1.ContainerPort{Name: "web", ContainerPort: 8080, Protocol: tcp})),
				podWith(pod("b", "10.0.0.2"), containerPorts(corev1.ContainerPort{Name: "web", ContainerPort: 8080, Protocol: tcp})),
				podWith(pod("c", "10.0.0.3"), containerPorts(corev1.ContainerPort{Name: "web", ContainerPort: 9090, Protocol: tcp})),
			),
			wantSubsets: []string{"ready=10.0.0.1,10.0.0.2 notReady= ports=http:8080/TCP", "ready=10.0.0.3 notReady= ports=http:9090/TCP"},
			wantGroups: []string{
				"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-],10.0.0.2[RS-]",
				"IPv4 ports=http:9090/TCP eps=10.0.0.3[RS-]",
			},
		},
		{
			name: "a pod that lacks a named port serves the Service's other ports only",
			svc: service(withPorts(
				svcPort("http", 80, intstr.FromString("http"), tcp),
				svcPort("metrics", 9100, intstr.FromString("metrics"), tcp),
			)),
			pods: pods(
				podWith(pod("a", "10.0.0.1"), containerPorts(
					corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: tcp},
					corev1.ContainerPort{Name: "metrics", ContainerPort: 9100, Protocol: tcp})),
				pod("b", "10.0.0.2"),
			),
			wantSubsets: []string{
				"ready=10.0.0.1,10.0.0.2 notReady= ports=http:8080/TCP",
				"ready=10.0.0.1 notReady= ports=metrics:9100/TCP",
			},
			wantGroups: []string{
				"IPv4 ports=http:8080/TCP eps=10.0.0.2[RS-]",
				"IPv4 ports=http:8080/TCP,metrics:9100/TCP eps=10.0.0.1[RS-]",
			},
		},
		{
			name:        "a named targetPort only matches a container port of the same protocol",
			svc:         service(withPorts(svcPort("dns", 53, intstr.FromString("http"), udp))),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{},
			wantGroups:  []string{"IPv4 ports= eps=10.0.0.1[RS-]"},
		},
		{
			name: "a named targetPort resolves on a sidecar (restartable init) container",
			svc:  service(withPorts(svcPort("proxy", 80, intstr.FromString("proxy"), tcp))),
			pods: pods(podWith(pod("a", "10.0.0.1"), func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "sidecar", RestartPolicy: &sidecar,
					Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001, Protocol: tcp}}}}
			})),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=proxy:15001/TCP"},
			wantGroups:  []string{"IPv4 ports=proxy:15001/TCP eps=10.0.0.1[RS-]"},
		},
		{
			name: "a named targetPort does not resolve on a plain init container",
			svc:  service(withPorts(svcPort("proxy", 80, intstr.FromString("proxy"), tcp))),
			pods: pods(podWith(pod("a", "10.0.0.1"), func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "init",
					Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001, Protocol: tcp}}}}
			})),
			wantSubsets: []string{},
			wantGroups:  []string{"IPv4 ports= eps=10.0.0.1[RS-]"},
		},
		{
			name: "a multi-port Service publishes every named port with its protocol in one subset",
			svc: service(withPorts(
				svcPort("http", 80, intstr.FromInt32(8080), tcp),
				svcPort("https", 443, intstr.FromInt32(8443), tcp),
				svcPort("metrics", 9090, intstr.FromInt32(9090), tcp),
				svcPort("syslog", 514, intstr.FromInt32(514), udp),
			)),
			pods:        pods(pod("a", "10.0.0.1"), pod("b", "10.0.0.2")),
			wantSubsets: []string{"ready=10.0.0.1,10.0.0.2 notReady= ports=http:8080/TCP,https:8443/TCP,metrics:9090/TCP,syslog:514/UDP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP,https:8443/TCP,metrics:9090/TCP,syslog:514/UDP eps=10.0.0.1[RS-],10.0.0.2[RS-]"},
		},
		{
			name: "appProtocol is carried over to both APIs",
			svc: service(withPorts(corev1.ServicePort{Name: "grpc", Port: 80, Protocol: tcp,
				TargetPort: intstr.FromInt32(8080), AppProtocol: ptr.To("kubernetes.io/h2c")})),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=grpc:8080/TCP(kubernetes.io/h2c)"},
			wantGroups:  []string{"IPv4 ports=grpc:8080/TCP(kubernetes.io/h2c) eps=10.0.0.1[RS-]"},
		},
		{
			name:        "a headless Service without ports publishes addresses without ports",
			svc:         service(headless, withPorts()),
			pods:        pods(pod("a", "10.0.0.1"), podWith(pod("b", "10.0.0.2"), notReady)),
			wantSubsets: []string{"ready=10.0.0.1 notReady=10.0.0.2 ports="},
			wantGroups:  []string{"IPv4 ports= eps=10.0.0.1[RS-],10.0.0.2[---]"},
		},
		{
			name:        "a Service with a ClusterIP and no ports gets no subsets",
			svc:         service(withPorts()),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{},
			wantGroups:  []string{"IPv4 ports= eps=10.0.0.1[RS-]"},
		},
		{
			name:        "a pod's hostname is published when its subdomain names the Service",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), hostnameSubdomain("web-0", "web"))),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]"},
			check: func(t *testing.T, subsets []corev1.EndpointSubset, groups []EndpointGroup) {
				if got := subsets[0].Addresses[0].Hostname; got != "web-0" {
					t.Errorf("Endpoints hostname = %q, want web-0", got)
				}
				if got := ptr.Deref(groups[0].Endpoints[0].Hostname, ""); got != "web-0" {
					t.Errorf("EndpointSlice hostname = %q, want web-0", got)
				}
			},
		},
		{
			name:        "a pod's hostname is not published when its subdomain names another Service",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), hostnameSubdomain("web-0", "other"))),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]"},
			check: func(t *testing.T, subsets []corev1.EndpointSubset, groups []EndpointGroup) {
				if subsets[0].Addresses[0].Hostname != "" || groups[0].Endpoints[0].Hostname != nil {
					t.Errorf("hostname published for a pod of another subdomain")
				}
			},
		},
		{
			name:        "addresses carry the pod reference and node name; endpoints the zone of the node",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), onNode("node-b"))),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]"},
			check: func(t *testing.T, subsets []corev1.EndpointSubset, groups []EndpointGroup) {
				addr := subsets[0].Addresses[0]
				want := corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "a", UID: "a-uid"}
				if addr.TargetRef == nil || *addr.TargetRef != want || ptr.Deref(addr.NodeName, "") != "node-b" {
					t.Errorf("address = %+v, want targetRef %+v on node-b", addr, want)
				}
				e := groups[0].Endpoints[0]
				if e.TargetRef == nil || *e.TargetRef != want || ptr.Deref(e.NodeName, "") != "node-b" || ptr.Deref(e.Zone, "") != "zone-b" {
					t.Errorf("endpoint = %+v, want targetRef %+v on node-b in zone-b", e, want)
				}
			},
		},
		{
			name:        "a node without a zone label gives no zone",
			svc:         service(),
			pods:        pods(pod("a", "10.0.0.1")),
			nodes:       nodes(map[string]string{"node-a": ""}),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]"},
			check: func(t *testing.T, _ []corev1.EndpointSubset, groups []EndpointGroup) {
				if groups[0].Endpoints[0].Zone != nil {
					t.Errorf("zone = %q, want none", *groups[0].Endpoints[0].Zone)
				}
			},
		},
		{
			name:        "a pod on an unknown node stays out of the slices until the node is known, not out of the Endpoints",
			svc:         service(),
			pods:        pods(podWith(pod("a", "10.0.0.1"), onNode("node-x")), pod("b", "10.0.0.2")),
			wantSubsets: []string{"ready=10.0.0.1,10.0.0.2 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.2[RS-]"},
			wantUnknown: []string{"a"},
		},
		{
			name:        "publishNotReadyAddresses publishes a pod on an unknown node",
			svc:         service(withPublishNotReady),
			pods:        pods(podWith(pod("a", "10.0.0.1"), onNode("node-x"), notReady)),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[R--]"},
		},
		{
			name:        "an IPv6 Service publishes the pod's IPv6 address",
			svc:         service(withFamilies(corev1.IPv6Protocol)),
			pods:        pods(pod("a", "10.0.0.1", "fd00::0001")),
			wantSubsets: []string{"ready=fd00::1 notReady= ports=http:8080/TCP"},
			wantGroups:  []string{"IPv6 ports=http:8080/TCP eps=fd00::1[RS-]"},
		},
		{
			name:        "a dual-stack Service: Endpoints in the primary family, one slice group per family",
			svc:         service(withFamilies(corev1.IPv4Protocol, corev1.IPv6Protocol)),
			pods:        pods(pod("a", "10.0.0.1", "fd00::1")),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups: []string{
				"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]",
				"IPv6 ports=http:8080/TCP eps=fd00::1[RS-]",
			},
		},
		{
			name:        "a pod without an IP of the Service's family is not published",
			svc:         service(withFamilies(corev1.IPv6Protocol)),
			pods:        pods(pod("a", "10.0.0.1")),
			wantSubsets: []string{},
			wantGroups:  []string{},
		},
		{
			name:        "a headless Service without families publishes both families in slices",
			svc:         service(headless, func(s *corev1.Service) { s.Spec.IPFamilies = nil }),
			pods:        pods(pod("a", "10.0.0.1", "fd00::1")),
			wantSubsets: []string{"ready=10.0.0.1 notReady= ports=http:8080/TCP"},
			wantGroups: []string{
				"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-]",
				"IPv6 ports=http:8080/TCP eps=fd00::1[RS-]",
			},
		},
		{
			name:        "ready and not-ready pods share a subset, sorted by IP",
			svc:         service(),
			pods:        pods(pod("c", "10.0.0.3"), podWith(pod("b", "10.0.0.2"), notReady), pod("a", "10.0.0.1")),
			wantSubsets: []string{"ready=10.0.0.1,10.0.0.3 notReady=10.0.0.2 ports=http:8080/TCP"},
			wantGroups:  []string{"IPv4 ports=http:8080/TCP eps=10.0.0.1[RS-],10.0.0.2[---],10.0.0.3[RS-]"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodeSet := tc.nodes
			if nodeSet == nil {
				nodeSet = defaultNodes
			}
			subsets := EndpointSubsets(tc.svc, tc.pods)
			groups, unknown := DesiredEndpointGroups(tc.svc, tc.pods, nodeSet)
			if got := renderSubsets(subsets); !slices.Equal(got, tc.wantSubsets) {
				t.Errorf("subsets:\n got %q\nwant %q", got, tc.wantSubsets)
			}
			if got := renderGroups(groups); !slices.Equal(got, tc.wantGroups) {
				t.Errorf("slice groups:\n got %q\nwant %q", got, tc.wantGroups)
			}
			if !slices.Equal(unknown, tc.wantUnknown) {
				t.Errorf("pods on unknown nodes = %q, want %q", unknown, tc.wantUnknown)
			}
			if tc.check != nil && !t.Failed() {
				tc.check(t, subsets, groups)
			}
		})
	}
}

func TestRepackSubsets(t *testing.T) {
	port := func(name string, p int32) corev1.EndpointPort {
		return corev1.EndpointPort{Name: name, Port: p, Protocol: corev1.ProtocolTCP}
	}
	addr := func(ip string) corev1.EndpointAddress { return corev1.EndpointAddress{IP: ip} }
	cases := []struct {
		name string
		in   []corev1.EndpointSubset
		want []string
	}{
		{
			name: "subsets with the same addresses merge their ports",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1")}, Ports: []corev1.EndpointPort{port("a", 1)}},
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1")}, Ports: []corev1.EndpointPort{port("b", 2)}},
			},
			want: []string{"ready=10.0.0.1 notReady= ports=a:1/TCP,b:2/TCP"},
		},
		{
			name: "an address listed twice for a port, ready and not ready, is not ready",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.1")}, Ports: []corev1.EndpointPort{port("a", 1)}},
				{NotReadyAddresses: []corev1.EndpointAddress{addr("10.0.0.1")}, Ports: []corev1.EndpointPort{port("a", 1)}},
			},
			want: []string{"ready= notReady=10.0.0.1 ports=a:1/TCP"},
		},
		{
			name: "duplicate addresses collapse and addresses sort by IP",
			in: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{addr("10.0.0.2"), addr("10.0.0.1"), addr("10.0.0.2")}, Ports: []corev1.EndpointPort{port("a", 1)}},
			},
			want: []string{"ready=10.0.0.1,10.0.0.2 notReady= ports=a:1/TCP"},
		},
		{
			name: "nothing repacks to nothing",
			in:   nil,
			want: []string{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := renderSubsets(RepackSubsets(tc.in)); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRepackSubsetsIsDeterministic(t *testing.T) {
	svc := service(withPorts(
		svcPort("a", 1, intstr.FromInt32(1), corev1.ProtocolTCP),
		svcPort("b", 2, intstr.FromInt32(2), corev1.ProtocolTCP),
		svcPort("c", 3, intstr.FromInt32(3), corev1.ProtocolUDP),
	))
	ps := pods(pod("a", "10.0.0.1"), podWith(pod("b", "10.0.0.2"), notReady), pod("c", "10.0.0.3"))
	first := EndpointSubsets(svc, ps)
	for range 20 {
		slices.Reverse(ps)
		if again := EndpointSubsets(svc, ps); !semanticIgnoreResourceVersion.DeepEqual(first, again) {
			t.Fatalf("subsets depend on pod order:\n%v\n%v", first, again)
		}
	}
	_ = discoveryv1.AddressTypeIPv4
}

// BenchmarkEndpointSubsets computes one Service's Endpoints subsets from 10 ready pods, as each
// sync of a converge does, for one port and for three.
//
//	go test ./controllers/endpoints -run '^$' -bench BenchmarkEndpointSubsets
func BenchmarkEndpointSubsets(b *testing.B) {
	var ps []*corev1.Pod
	for i := range 10 {
		ps = append(ps, pod(string(rune('a'+i)), "10.0.0."+strconv.Itoa(i+1)))
	}
	for _, tc := range []struct {
		name  string
		ports []corev1.ServicePort
	}{
		{"ports=1", []corev1.ServicePort{svcPort("a", 1, intstr.FromInt32(1), corev1.ProtocolTCP)}},
		{"ports=3", []corev1.ServicePort{
			svcPort("a", 1, intstr.FromInt32(1), corev1.ProtocolTCP),
			svcPort("b", 2, intstr.FromInt32(2), corev1.ProtocolTCP),
			svcPort("c", 3, intstr.FromInt32(3), corev1.ProtocolUDP),
		}},
	} {
		svc := service(withPorts(tc.ports...))
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				EndpointSubsets(svc, ps)
			}
		})
	}
}
