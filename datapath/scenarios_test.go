package datapath

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// packetScenario is one kind of connection to a Service on node-a (zone-a), written so
// that two runners play it: the tracer over the Fake (TestTracedPackets, no root) and
// the kernel in network namespaces (TestPacketScenariosInTheKernel). The kernel run keeps
// the tracer honest.
type packetScenario struct {
	name string
	zone string // node-a's zone; default zone-a
	// pods are the scenario's pods; each answers TCP on 8080. The client is one more.
	pods []scenarioPod
	// services builds the Services and slices from the pods' addresses.
	services func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice)
	from     string // a pod's name, fromClient, fromNode or fromOutside
	to       string // ClusterIP:port, TCP
	want     scenarioWant
}

// scenarioPod is a pod of a scenario, on node (default node-a).
type scenarioPod struct{ name, node string }

// podIPs returns the IPv4 address of a scenario's pod.
type podIPs func(name string) string

// Where a scenario's connection comes from, besides one of its pods.
const (
	fromClient  = "client"  // a pod in the cluster CIDR that is no endpoint
	fromNode    = "node"    // the node itself (output hook)
	fromOutside = "outside" // an address outside the cluster CIDRs, routed through the node
	outsideIP   = "192.168.77.10"
)

// scenarioWant is what becomes of the connection.
type scenarioWant struct {
	// reach lists the pods the connection can end at, every one of them possible.
	reach []string
	// sticky: once connected, the client stays on its pod (ClientIP affinity).
	sticky bool
	// refused: the client is refused at once; dropped: its packets vanish on the node.
	refused, dropped bool
	// masquerade: the pod sees the node's address, not the client's.
	masquerade bool
}

// serviceTo builds a Service on 80 -> 8080 at clusterIP and its slice with the endpoints.
func serviceTo(name, clusterIP string, eps ...ep) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	svc := makeService(name, clusterIP, tcp("http", 80, 8080))
	return []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{makeSlice(svc, name+"-1", eps...)}
}

func readyOn(ip podIPs, node string, names ...string) []ep {
	var out []ep
	for _, n := range names {
		out = append(out, readyEP(ip(n), node))
	}
	return out
}

func packetScenarios() []packetScenario {
	three := []scenarioPod{{name: "backend-0"}, {name: "backend-1"}, {name: "backend-2"}}
	spread := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return serviceTo("backend", "10.96.2.10", readyOn(ip, "node-a", "backend-0", "backend-1", "backend-2")...)
	}
	localAndRemote := []scenarioPod{{name: "local"}, {name: "remote", node: "node-b"}}
	internalLocal := func(eps func(ip podIPs) []ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := serviceTo("node-local", "10.96.2.60", eps(ip)...)
			svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
			return svcs, slices
		}
	}
	zonal := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return serviceTo("zonal", "10.96.2.70", zoneHinted(ip("zone-a-pod"), "node-a", "zone-a"), zoneHinted(ip("zone-b-pod"), "node-b", "zone-b"))
	}
	zonalPods := []scenarioPod{{name: "zone-a-pod"}, {name: "zone-b-pod", node: "node-b"}}
	all := []string{"backend-0", "backend-1", "backend-2"}
	// nodePort is a NodePort Service (with an external IP) whose endpoints are the pods.
	nodePort := func(policy corev1.ServiceExternalTrafficPolicy, pods ...scenarioPod) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			var eps []ep
			for _, p := range pods {
				node := p.node
				if node == "" {
					node = "node-a"
				}
				eps = append(eps, readyEP(ip(p.name), node))
			}
			svcs, slices := serviceTo("nodeport", "10.96.2.80", eps...)
			svcs[0].Spec.Type, svcs[0].Spec.ExternalTrafficPolicy = corev1.ServiceTypeNodePort, policy
			svcs[0].Spec.Ports[0].NodePort = 30080
			svcs[0].Spec.ExternalIPs = []string{"203.0.113.80"}
			return svcs, slices
		}
	}
	loadBalancer := func(sourceRange string) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...)(ip)
			svcs[0].Spec.Type, svcs[0].Spec.LoadBalancerSourceRanges = corev1.ServiceTypeLoadBalancer, []string{sourceRange}
			svcs[0].Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.80"}}
			return svcs, slices
		}
	}
	return []packetScenario{
		{name: "new connections spread over every endpoint", pods: three, services: spread,
			from: fromClient, to: "10.96.2.10:80", want: scenarioWant{reach: all}},
		{name: "from the node: spread and masqueraded", pods: three, services: spread,
			from: fromNode, to: "10.96.2.10:80", want: scenarioWant{reach: all, masquerade: true}},
		{name: "from outside the cluster CIDR: masqueraded", pods: three, services: spread,
			from: fromOutside, to: "10.96.2.10:80", want: scenarioWant{reach: all, masquerade: true}},
		{name: "a pod reaching itself through its Service is masqueraded (hairpin)", pods: three[:1],
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("self", "10.96.2.20", readyEP(ip("backend-0"), "node-a"))
			},
			from: "backend-0", to: "10.96.2.20:80", want: scenarioWant{reach: all[:1], masquerade: true}},
		{name: "a pod reaching another pod of its Service is not masqueraded", pods: three[:2],
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("other", "10.96.2.21", readyEP(ip("backend-1"), "node-a"))
			},
			from: "backend-0", to: "10.96.2.21:80", want: scenarioWant{reach: all[1:2]}},
		{name: "ClientIP affinity: any endpoint first, then always the same", pods: three,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := spread(ip)
				sticky(svcs[0], 60)
				return svcs, slices
			},
			from: fromClient, to: "10.96.2.10:80", want: scenarioWant{reach: all, sticky: true}},
		{name: "a Service without endpoints refuses", pods: nil,
			services: func(podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("empty", "10.96.2.30")
			},
			from: fromClient, to: "10.96.2.30:80", want: scenarioWant{refused: true}},
		{name: "a Service without endpoints refuses the node too", pods: nil,
			services: func(podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("empty", "10.96.2.30")
			},
			from: fromNode, to: "10.96.2.30:80", want: scenarioWant{refused: true}},
		{name: "a port the Service does not have is refused", pods: three, services: spread,
			from: fromClient, to: "10.96.2.10:81", want: scenarioWant{refused: true}},
		{name: "an unallocated address of the Service CIDR is dropped", pods: three, services: spread,
			from: fromClient, to: "10.96.9.99:80", want: scenarioWant{dropped: true}},
		{name: "internalTrafficPolicy Local: only this node's endpoints", pods: localAndRemote,
			services: internalLocal(func(ip podIPs) []ep {
				return []ep{readyEP(ip("local"), "node-a"), readyEP(ip("remote"), "node-b")}
			}),
			from: fromClient, to: "10.96.2.60:80", want: scenarioWant{reach: []string{"local"}}},
		{name: "internalTrafficPolicy Local with endpoints on other nodes only: dropped", pods: localAndRemote[1:],
			services: internalLocal(func(ip podIPs) []ep { return []ep{readyEP(ip("remote"), "node-b")} }),
			from:     fromClient, to: "10.96.2.60:80", want: scenarioWant{dropped: true}},
		{name: "NodePort from outside: every endpoint, masqueraded", pods: localAndRemote, services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from: fromOutside, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "NodePort, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromOutside, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local"}}},
		{name: "NodePort, externalTrafficPolicy Local, from a pod: every endpoint", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromClient, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}}},
		{name: "NodePort, externalTrafficPolicy Local, no local endpoint: dropped from outside", pods: localAndRemote[1:],
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote[1:]...),
			from:     fromOutside, to: nodeIP + ":30080", want: scenarioWant{dropped: true}},
		{name: "NodePort of a Service with internalTrafficPolicy Local: every endpoint from outside", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...)(ip)
				svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
				return svcs, slices
			},
			from: fromOutside, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "NodePort without endpoints refuses", pods: nil, services: nodePort(corev1.ServiceExternalTrafficPolicyCluster),
			from: fromOutside, to: nodeIP + ":30080", want: scenarioWant{refused: true}},
		{name: "an external IP from outside: masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromOutside, to: "203.0.113.80:80", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "an external IP, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromOutside, to: "203.0.113.80:80", want: scenarioWant{reach: []string{"local"}}},
		{name: "an external IP, externalTrafficPolicy Local, from a pod: every endpoint", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromClient, to: "203.0.113.80:80", want: scenarioWant{reach: []string{"local", "remote"}}},
		{name: "an external IP of a Service with internalTrafficPolicy Local: every endpoint from outside", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...)(ip)
				svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
				return svcs, slices
			},
			from: fromOutside, to: "203.0.113.80:80", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a load balancer IP from outside its source ranges: dropped", pods: localAndRemote,
			services: loadBalancer("10.244.0.0/16"), from: fromOutside, to: "198.51.100.80:80", want: scenarioWant{dropped: true}},
		{name: "a load balancer IP from inside its source ranges", pods: localAndRemote,
			services: loadBalancer("192.168.77.0/24"), from: fromOutside, to: "198.51.100.80:80",
			want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "topology hints: only the endpoints hinted for this node's zone", pods: zonalPods, services: zonal,
			from: fromClient, to: "10.96.2.70:80", want: scenarioWant{reach: []string{"zone-a-pod"}}},
		{name: "topology hints for no endpoint of this node's zone: every endpoint", zone: "zone-c", pods: zonalPods, services: zonal,
			from: fromClient, to: "10.96.2.70:80", want: scenarioWant{reach: []string{"zone-a-pod", "zone-b-pod"}}},
	}
}

// scenarioConfig is node-a's Config for the scenario (families aside).
func (s packetScenario) config() Config {
	zone := s.zone
	if zone == "" {
		zone = "zone-a"
	}
	return Config{NodeName: "node-a", Zone: zone, ClusterCIDRs: []string{clusterCIDRv4}, ServiceCIDRs: []string{serviceCIDRv4},
		IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}}
}

func TestPacketScenariosAreWellFormed(t *testing.T) {
	for _, s := range packetScenarios() {
		outcomes := 0
		for _, b := range []bool{len(s.want.reach) > 0, s.want.refused, s.want.dropped} {
			if b {
				outcomes++
			}
		}
		if outcomes != 1 {
			t.Errorf("%s: want exactly one of reach, refused, dropped", s.name)
		}
	}
}
