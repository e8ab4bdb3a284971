package datapath

import (
	"cmp"
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
	name   string
	family corev1.IPFamily // of the Service, the pods and the client; default IPv4
	zone   string          // node-a's zone; default zone-a
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

// podIPs returns the address of a scenario's pod in the scenario's family.
type podIPs func(name string) string

// Where a scenario's connection comes from, besides one of its pods.
const (
	fromClient  = "client"  // a pod in the cluster CIDR that is no endpoint
	fromNode    = "node"    // the node itself (output hook)
	fromOutside = "outside" // an address outside the cluster CIDRs, routed through the node
	outsideIP   = "192.168.77.10"
	// outsideGateway is the node's address on the outside client's link: a local address of
	// the node, but not its node IP.
	outsideGateway = "192.168.77.1"
	outsideIPv6    = "fd00:77::10"
	// outsideGatewayV6 is outsideGateway's IPv6 counterpart.
	outsideGatewayV6 = "fd00:77::1"
	// An external IP and a load balancer IP of the IPv6 scenarios.
	externalIPv6, loadBalancerIPv6 = "2001:db8:203::80", "2001:db8:198::80"
)

// scenarioWant is what becomes of the connection.
type scenarioWant struct {
	// reach lists the pods the connection can end at, every one of them possible.
	reach []string
	// sticky: once connected, the client stays on its pod (ClientIP affinity).
	sticky bool
	// refused: the client is refused at once; dropped: its packets vanish on the node.
	refused, dropped bool
	// unserved: no rule touches the connection; it goes on as if no Service existed: to the
	// node's own closed port, which refuses it, or to an address the node has no route to.
	unserved bool
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

// The pods most scenarios use, in either family: three on this node, or one here and one on
// node-b.
var (
	three          = []scenarioPod{{name: "backend-0"}, {name: "backend-1"}, {name: "backend-2"}}
	backendNames   = []string{"backend-0", "backend-1", "backend-2"}
	localAndRemote = []scenarioPod{{name: "local"}, {name: "remote", node: "node-b"}}
)

func packetScenarios() []packetScenario {
	spread := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return serviceTo("backend", "10.96.2.10", readyOn(ip, "node-a", "backend-0", "backend-1", "backend-2")...)
	}
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
	// withEndpoints is a Service at 10.96.2.90 with the given endpoints, by pod name.
	withEndpoints := func(eps ...func(ip podIPs) ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			var list []ep
			for _, e := range eps {
				list = append(list, e(ip))
			}
			return serviceTo("lifecycle", "10.96.2.90", list...)
		}
	}
	ready := func(pod, node string) func(ip podIPs) ep {
		return func(ip podIPs) ep { return readyEP(ip(pod), node) }
	}
	terminating := func(pod, node string, serving bool) func(ip podIPs) ep {
		return func(ip podIPs) ep { return ep{ip: ip(pod), node: node, serving: serving, terminating: true} }
	}
	notReady := func(pod string) func(ip podIPs) ep {
		return func(ip podIPs) ep { return ep{ip: ip(pod), node: "node-a"} }
	}
	// localTerminating is a NodePort Service, externalTrafficPolicy Local, whose endpoint on
	// this node is terminating (still serving) and whose other one is ready on node-b.
	localTerminating := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...)(ip)
		slices[0].Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: knftables.PtrTo(false),
			Serving: knftables.PtrTo(true), Terminating: knftables.PtrTo(true)}
		return svcs, slices
	}
	nodeHinted := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		here, there := readyEP(ip("local"), "node-a"), readyEP(ip("remote"), "node-b")
		here.zones, here.nodes = []string{"zone-a"}, []string{"node-a"}
		there.zones, there.nodes = []string{"zone-a"}, []string{"node-b"}
		svcs, slices := serviceTo("same-node", "10.96.2.100", here, there)
		svcs[0].Spec.TrafficDistribution = knftables.PtrTo(corev1.ServiceTrafficDistributionPreferSameNode)
		return svcs, slices
	}
	scenarios := []packetScenario{
		{name: "new connections spread over every endpoint", pods: three, services: spread,
			from: fromClient, to: "10.96.2.10:80", want: scenarioWant{reach: backendNames}},
		{name: "from the node: spread and masqueraded", pods: three, services: spread,
			from: fromNode, to: "10.96.2.10:80", want: scenarioWant{reach: backendNames, masquerade: true}},
		{name: "from outside the cluster CIDR: masqueraded", pods: three, services: spread,
			from: fromOutside, to: "10.96.2.10:80", want: scenarioWant{reach: backendNames, masquerade: true}},
		{name: "a pod reaching itself through its Service is masqueraded (hairpin)", pods: three[:1],
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("self", "10.96.2.20", readyEP(ip("backend-0"), "node-a"))
			},
			from: "backend-0", to: "10.96.2.20:80", want: scenarioWant{reach: backendNames[:1], masquerade: true}},
		{name: "a pod reaching another pod of its Service is not masqueraded", pods: three[:2],
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("other", "10.96.2.21", readyEP(ip("backend-1"), "node-a"))
			},
			from: "backend-0", to: "10.96.2.21:80", want: scenarioWant{reach: backendNames[1:2]}},
		{name: "ClientIP affinity: any endpoint first, then always the same", pods: three,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := spread(ip)
				sticky(svcs[0], 60)
				return svcs, slices
			},
			from: fromClient, to: "10.96.2.10:80", want: scenarioWant{reach: backendNames, sticky: true}},
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
		{name: "node hints (PreferSameNode): only the endpoints hinted for this node", pods: localAndRemote, services: nodeHinted,
			from: fromClient, to: "10.96.2.100:80", want: scenarioWant{reach: []string{"local"}}},

		// Endpoints through their lifecycle.
		{name: "every endpoint terminating: the serving ones take new connections", pods: three,
			services: withEndpoints(terminating("backend-0", "node-a", true), terminating("backend-1", "node-b", true), terminating("backend-2", "node-a", false)),
			from:     fromClient, to: "10.96.2.90:80", want: scenarioWant{reach: backendNames[:2]}},
		{name: "a ready endpoint takes every new connection from serving terminating ones", pods: three,
			services: withEndpoints(ready("backend-0", "node-b"), terminating("backend-1", "node-a", true), terminating("backend-2", "node-a", true)),
			from:     fromClient, to: "10.96.2.90:80", want: scenarioWant{reach: backendNames[:1]}},
		{name: "endpoints neither ready nor serving: refused", pods: three[:2],
			services: withEndpoints(notReady("backend-0"), terminating("backend-1", "node-a", false)),
			from:     fromClient, to: "10.96.2.90:80", want: scenarioWant{refused: true}},
		{name: "NodePort, externalTrafficPolicy Local: a terminating local endpoint before a ready remote one", pods: localAndRemote,
			services: localTerminating, from: fromOutside, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local"}}},

		// External destinations reached from inside the cluster, and the node's own addresses.
		{name: "an external IP from a pod: every endpoint, masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromClient, to: "203.0.113.80:80", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a NodePort from the node: every endpoint, masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromNode, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a NodePort, externalTrafficPolicy Local, from the node: every endpoint, masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromNode, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a NodePort on a node address that is not the node IP is refused", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromOutside, to: outsideGateway + ":30080", want: scenarioWant{unserved: true}},
		{name: "a NodePort on localhost from the node is left alone", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromNode, to: "127.0.0.1:30080", want: scenarioWant{unserved: true}},
		{name: "ClientIP affinity on a NodePort from outside", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...)(ip)
				sticky(svcs[0], 60)
				return svcs, slices
			},
			from: fromOutside, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, sticky: true, masquerade: true}},
		{name: "internalTrafficPolicy Local from the node: this node's endpoints, masqueraded", pods: localAndRemote,
			services: internalLocal(func(ip podIPs) []ep {
				return []ep{readyEP(ip("local"), "node-a"), readyEP(ip("remote"), "node-b")}
			}),
			from: fromNode, to: "10.96.2.60:80", want: scenarioWant{reach: []string{"local"}, masquerade: true}},
		{name: "a load balancer IP from a pod outside its source ranges: dropped", pods: localAndRemote,
			services: loadBalancer("192.168.77.0/24"), from: fromClient, to: "198.51.100.80:80", want: scenarioWant{dropped: true}},
		{name: "a load balancer, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := loadBalancer("192.168.77.0/24")(ip)
				svcs[0].Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				return svcs, slices
			},
			from: fromOutside, to: "198.51.100.80:80", want: scenarioWant{reach: []string{"local"}}},
		{name: "a load balancer IP, externalTrafficPolicy Local, from a pod: every endpoint", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := loadBalancer(clusterCIDRv4)(ip)
				svcs[0].Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				return svcs, slices
			},
			from: fromClient, to: "198.51.100.80:80", want: scenarioWant{reach: []string{"local", "remote"}}},
		{name: "an external IP, externalTrafficPolicy Local, from the node: every endpoint, masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...),
			from:     fromNode, to: externalIPFromNode + ":80", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a load balancer IP, externalTrafficPolicy Local, from the node: every endpoint, masqueraded", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := loadBalancer("192.168.77.0/24")(ip)
				svcs[0].Spec.ExternalTrafficPolicy, svcs[0].Spec.LoadBalancerSourceRanges = corev1.ServiceExternalTrafficPolicyLocal, nil
				svcs[0].Status.LoadBalancer.Ingress[0].IP = loadBalancerIPFromNode
				return svcs, slices
			},
			from: fromNode, to: loadBalancerIPFromNode + ":80", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a load balancer IP from the node, outside its source ranges: dropped", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := loadBalancer("192.168.77.0/24")(ip)
				svcs[0].Status.LoadBalancer.Ingress[0].IP = loadBalancerIPFromNode
				return svcs, slices
			},
			from: fromNode, to: loadBalancerIPFromNode + ":80", want: scenarioWant{dropped: true}},
		{name: "a load balancer IP with ipMode Proxy is left to the load balancer", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := loadBalancer("192.168.77.0/24")(ip)
				svcs[0].Status.LoadBalancer.Ingress[0].IPMode = knftables.PtrTo(corev1.LoadBalancerIPModeProxy)
				return svcs, slices
			},
			from: fromOutside, to: "198.51.100.80:80", want: scenarioWant{unserved: true}},
		{name: "internalTrafficPolicy Local from outside the cluster: this node's endpoints, masqueraded", pods: localAndRemote,
			services: internalLocal(func(ip podIPs) []ep {
				return []ep{readyEP(ip("local"), "node-a"), readyEP(ip("remote"), "node-b")}
			}),
			from: fromOutside, to: "10.96.2.60:80", want: scenarioWant{reach: []string{"local"}, masquerade: true}},
		{name: "a Service port without endpoints refuses while another port has them", pods: three,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svc := makeService("two-ports", "10.96.2.110", tcp("http", 80, 8080), tcp("admin", 81, 9090))
				slice := makeSlice(svc, "two-ports-1", readyOn(ip, "node-a", backendNames...)...)
				slice.Ports = slice.Ports[:1] // no pod has the admin port
				return []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}
			},
			from: fromClient, to: "10.96.2.110:81", want: scenarioWant{refused: true}},
		{name: "a NodePort from a pod: every endpoint, masqueraded", pods: localAndRemote,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...),
			from:     fromClient, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}, masquerade: true}},
		{name: "a NodePort with both traffic policies Local, from a pod: every endpoint", pods: localAndRemote,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...)(ip)
				svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
				return svcs, slices
			},
			from: fromClient, to: nodeIP + ":30080", want: scenarioWant{reach: []string{"local", "remote"}}},
	}
	return append(scenarios, ipv6Scenarios()...)
}

// ipv6Scenarios are IPv6 Services of IPv6 pods, from inside the cluster and the node.
func ipv6Scenarios() []packetScenario {
	v6 := func(name, clusterIP string, eps func(ip podIPs) []ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := serviceTo(name, clusterIP, eps(ip)...)
			svcs[0].Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
			return svcs, slices
		}
	}
	spread := v6("backend-v6", "fd00:10:96::210", func(ip podIPs) []ep { return readyOn(ip, "node-a", backendNames...) })
	internalLocal := func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		svcs, slices := v6("node-local-v6", "fd00:10:96::260", func(ip podIPs) []ep {
			return []ep{readyEP(ip("local"), "node-a"), readyEP(ip("remote"), "node-b")}
		})(ip)
		svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
		return svcs, slices
	}
	// nodePort is a NodePort Service with an external IP, whose endpoints are the pods.
	nodePort := func(policy corev1.ServiceExternalTrafficPolicy, pods ...scenarioPod) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := v6("nodeport-v6", "fd00:10:96::280", func(ip podIPs) []ep {
				var eps []ep
				for _, p := range pods {
					eps = append(eps, readyEP(ip(p.name), cmp.Or(p.node, "node-a")))
				}
				return eps
			})(ip)
			svcs[0].Spec.Type, svcs[0].Spec.ExternalTrafficPolicy = corev1.ServiceTypeNodePort, policy
			svcs[0].Spec.Ports[0].NodePort = 30080
			svcs[0].Spec.ExternalIPs = []string{externalIPv6}
			return svcs, slices
		}
	}
	// loadBalancer is nodePort's Service as a LoadBalancer at loadBalancerIPv6, reachable
	// from sourceRange.
	loadBalancer := func(policy corev1.ServiceExternalTrafficPolicy, sourceRange string) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := nodePort(policy, localAndRemote...)(ip)
			svcs[0].Spec.Type, svcs[0].Spec.LoadBalancerSourceRanges = corev1.ServiceTypeLoadBalancer, []string{sourceRange}
			svcs[0].Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: loadBalancerIPv6}}
			return svcs, slices
		}
	}
	nodePortV6 := "[" + nodeIPv6 + "]:30080"
	externalIP, loadBalancerIP := "["+externalIPv6+"]:80", "["+loadBalancerIPv6+"]:80"
	both := []string{"local", "remote"}
	// The NodePort Service of one pod here and one on node-b, under each externalTrafficPolicy.
	clusterWide := nodePort(corev1.ServiceExternalTrafficPolicyCluster, localAndRemote...)
	nodeLocal := nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote...)
	scenarios := []packetScenario{
		{name: "IPv6: new connections spread over every endpoint", pods: three, services: spread,
			from: fromClient, to: "[fd00:10:96::210]:80", want: scenarioWant{reach: backendNames}},
		{name: "IPv6: from the node: spread and masqueraded", pods: three, services: spread,
			from: fromNode, to: "[fd00:10:96::210]:80", want: scenarioWant{reach: backendNames, masquerade: true}},
		{name: "IPv6: a pod reaching itself through its Service is masqueraded (hairpin)", pods: three[:1],
			services: v6("self-v6", "fd00:10:96::220", func(ip podIPs) []ep { return readyOn(ip, "node-a", backendNames[0]) }),
			from:     "backend-0", to: "[fd00:10:96::220]:80", want: scenarioWant{reach: backendNames[:1], masquerade: true}},
		{name: "IPv6: a Service without endpoints refuses", pods: nil,
			services: v6("empty-v6", "fd00:10:96::230", func(podIPs) []ep { return nil }),
			from:     fromClient, to: "[fd00:10:96::230]:80", want: scenarioWant{refused: true}},
		{name: "IPv6: a port the Service does not have is refused", pods: three, services: spread,
			from: fromClient, to: "[fd00:10:96::210]:81", want: scenarioWant{refused: true}},
		{name: "IPv6: an unallocated address of the Service CIDR is dropped", pods: three, services: spread,
			from: fromClient, to: "[fd00:10:96::999]:80", want: scenarioWant{dropped: true}},
		{name: "IPv6: internalTrafficPolicy Local: only this node's endpoints", pods: localAndRemote, services: internalLocal,
			from: fromClient, to: "[fd00:10:96::260]:80", want: scenarioWant{reach: []string{"local"}}},
		{name: "IPv6: ClientIP affinity: any endpoint first, then always the same", pods: three,
			services: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := spread(ip)
				sticky(svcs[0], 60)
				return svcs, slices
			},
			from: fromClient, to: "[fd00:10:96::210]:80", want: scenarioWant{reach: backendNames, sticky: true}},
		{name: "IPv6: from outside the cluster CIDR: masqueraded", pods: three, services: spread,
			from: fromOutside, to: "[fd00:10:96::210]:80", want: scenarioWant{reach: backendNames, masquerade: true}},
		{name: "IPv6: NodePort from outside: every endpoint, masqueraded", pods: localAndRemote,
			services: clusterWide,
			from:     fromOutside, to: nodePortV6, want: scenarioWant{reach: both, masquerade: true}},
		{name: "IPv6: NodePort, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: nodeLocal,
			from:     fromOutside, to: nodePortV6, want: scenarioWant{reach: []string{"local"}}},
		{name: "IPv6: NodePort, externalTrafficPolicy Local, no local endpoint: dropped from outside", pods: localAndRemote[1:],
			services: nodePort(corev1.ServiceExternalTrafficPolicyLocal, localAndRemote[1:]...),
			from:     fromOutside, to: nodePortV6, want: scenarioWant{dropped: true}},
		{name: "IPv6: NodePort, externalTrafficPolicy Local, from a pod: every endpoint", pods: localAndRemote,
			services: nodeLocal,
			from:     fromClient, to: nodePortV6, want: scenarioWant{reach: both}},
		{name: "IPv6: a NodePort from the node: every endpoint, masqueraded", pods: localAndRemote,
			services: clusterWide,
			from:     fromNode, to: nodePortV6, want: scenarioWant{reach: both, masquerade: true}},
		{name: "IPv6: a NodePort on a node address that is not the node IP is refused", pods: localAndRemote,
			services: clusterWide,
			from:     fromOutside, to: "[" + outsideGatewayV6 + "]:30080", want: scenarioWant{unserved: true}},
		{name: "IPv6: a NodePort on localhost from the node is left alone", pods: localAndRemote,
			services: clusterWide,
			from:     fromNode, to: "[::1]:30080", want: scenarioWant{unserved: true}},
		{name: "IPv6: NodePort without endpoints refuses", pods: nil,
			services: nodePort(corev1.ServiceExternalTrafficPolicyCluster),
			from:     fromOutside, to: nodePortV6, want: scenarioWant{refused: true}},
		{name: "IPv6: an external IP from outside: masqueraded", pods: localAndRemote,
			services: clusterWide,
			from:     fromOutside, to: externalIP, want: scenarioWant{reach: both, masquerade: true}},
		{name: "IPv6: an external IP, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: nodeLocal,
			from:     fromOutside, to: externalIP, want: scenarioWant{reach: []string{"local"}}},
		{name: "IPv6: an external IP from a pod: every endpoint, masqueraded", pods: localAndRemote,
			services: clusterWide,
			from:     fromClient, to: externalIP, want: scenarioWant{reach: both, masquerade: true}},
		{name: "IPv6: a load balancer IP from inside its source ranges", pods: localAndRemote,
			services: loadBalancer(corev1.ServiceExternalTrafficPolicyCluster, "fd00:77::/64"),
			from:     fromOutside, to: loadBalancerIP, want: scenarioWant{reach: both, masquerade: true}},
		{name: "IPv6: a load balancer IP from outside its source ranges: dropped", pods: localAndRemote,
			services: loadBalancer(corev1.ServiceExternalTrafficPolicyCluster, clusterCIDRv6),
			from:     fromOutside, to: loadBalancerIP, want: scenarioWant{dropped: true}},
		{name: "IPv6: a load balancer, externalTrafficPolicy Local, from outside: this node's endpoints, source kept", pods: localAndRemote,
			services: loadBalancer(corev1.ServiceExternalTrafficPolicyLocal, "fd00:77::/64"),
			from:     fromOutside, to: loadBalancerIP, want: scenarioWant{reach: []string{"local"}}},
		{name: "IPv6: a load balancer IP from a pod outside its source ranges: dropped", pods: localAndRemote,
			services: loadBalancer(corev1.ServiceExternalTrafficPolicyCluster, "fd00:77::/64"),
			from:     fromClient, to: loadBalancerIP, want: scenarioWant{dropped: true}},
	}
	for i := range scenarios {
		scenarios[i].family = corev1.IPv6Protocol
	}
	return scenarios
}

// scenarioConfig is node-a's Config for the scenario (families aside).
func (s packetScenario) config() Config {
	zone := s.zone
	if zone == "" {
		zone = "zone-a"
	}
	if s.family == corev1.IPv6Protocol {
		return Config{NodeName: "node-a", Zone: zone, ClusterCIDRs: []string{clusterCIDRv6}, ServiceCIDRs: []string{serviceCIDRv6},
			NodeIPs: []string{nodeIPv6}, NodePortAddresses: []string{nodeIPv6}, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol}}
	}
	// NodePorts on the node IP only: the agent's default, as kube-proxy's nftables mode
	// (--nodeport-addresses primary).
	return Config{NodeName: "node-a", Zone: zone, ClusterCIDRs: []string{clusterCIDRv4}, ServiceCIDRs: []string{serviceCIDRv4},
		NodeIPs: []string{nodeIP}, NodePortAddresses: []string{nodeIP}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}}
}

func TestPacketScenariosAreWellFormed(t *testing.T) {
	for _, s := range packetScenarios() {
		outcomes := 0
		for _, b := range []bool{len(s.want.reach) > 0, s.want.refused, s.want.dropped, s.want.unserved} {
			if b {
				outcomes++
			}
		}
		if outcomes != 1 {
			t.Errorf("%s: want exactly one of reach, refused, dropped, unserved", s.name)
		}
	}
}
