package datapath

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// svcPort is a Service port: name, protocol, port and target port.
type svcPort struct {
	name   string
	proto  corev1.Protocol
	port   int32
	target int32
}

func tcp(name string, port, target int32) svcPort {
	return svcPort{name, corev1.ProtocolTCP, port, target}
}
func udp(name string, port, target int32) svcPort {
	return svcPort{name, corev1.ProtocolUDP, port, target}
}

// makeService builds a ClusterIP Service in namespace "default".
func makeService(name, clusterIP string, ports ...svcPort) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Selector: map[string]string{"app": name},
		},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.name, Protocol: p.proto, Port: p.port,
			TargetPort: intstr.FromInt32(p.target)})
	}
	return svc
}

// sticky makes svc use ClientIP affinity with the given timeout (0: API default).
func sticky(svc *corev1.Service, timeoutSeconds int32) *corev1.Service {
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	if timeoutSeconds > 0 {
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: knftables.PtrTo(timeoutSeconds)}}
	}
	return svc
}

// ep is one endpoint of a slice.
type ep struct {
	ip          string
	node        string
	ready       bool
	serving     bool
	terminating bool
	// zones and nodes become hints.forZones and hints.forNodes.
	zones, nodes []string
}

func readyEP(ip, node string) ep { return ep{ip: ip, node: node, ready: true, serving: true} }

// makeSlice builds the EndpointSlice of svc with the given endpoints and the targets
// of svc's ports.
func makeSlice(svc *corev1.Service, sliceName string, endpoints ...ep) *discoveryv1.EndpointSlice {
	addrType := discoveryv1.AddressTypeIPv4
	if len(svc.Spec.ClusterIPs) > 0 && ClusterIPOf(svc, corev1.IPv6Protocol) != "" {
		addrType = discoveryv1.AddressTypeIPv6
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: sliceName,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: addrType,
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: knftables.PtrTo(p.Name), Protocol: knftables.PtrTo(p.Protocol),
			Port: knftables.PtrTo(p.TargetPort.IntVal)})
	}
	for _, e := range endpoints {
		d := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{
			Ready: knftables.PtrTo(e.ready), Serving: knftables.PtrTo(e.serving), Terminating: knftables.PtrTo(e.terminating)}}
		if e.node != "" {
			d.NodeName = knftables.PtrTo(e.node)
		}
		if len(e.zones)+len(e.nodes) > 0 {
			d.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				d.Hints.ForZones = append(d.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodes {
				d.Hints.ForNodes = append(d.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		s.Endpoints = append(s.Endpoints, d)
	}
	return s
}

// seedBackend is the seeds' backend-service: app=backend, 80 -> 8080, three pods.
func seedBackend() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("backend-service", "10.96.0.10", tcp("", 80, 8080))
	svc.Spec.Selector = map[string]string{"app": "backend"}
	return svc, makeSlice(svc, "backend-service-abc12",
		readyEP("10.244.1.10", "node-a"), readyEP("10.244.1.11", "node-a"), readyEP("10.244.2.12", "node-b"))
}

// seedMultiPort is the seeds' multi-port-service: http 80->8080, https 443->8443, metrics 9090.
func seedMultiPort() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("multi-port-service", "10.96.0.20", tcp("http", 80, 8080), tcp("https", 443, 8443), tcp("metrics", 9090, 9090))
	return svc, makeSlice(svc, "multi-port-service-x7k2p", readyEP("10.244.1.20", "node-a"), readyEP("10.244.2.21", "node-b"))
}

// seedSticky is the seeds' sticky-service: ClientIP affinity with the default timeout.
func seedSticky() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := sticky(makeService("sticky-service", "10.96.0.30", tcp("", 80, 8080)), 0)
	return svc, makeSlice(svc, "sticky-service-q9d4m", readyEP("10.244.1.30", "node-a"), readyEP("10.244.2.31", "node-b"))
}

// seedExternalDatabase is the seeds' selectorless external-database with a slice
// mirrored from user Endpoints (192.168.1.100:5432, no node).
func seedExternalDatabase() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("external-database", "10.96.0.40", tcp("", 5432, 5432))
	svc.Spec.Selector = nil
	slice := makeSlice(svc, "external-database-mirror1", readyEP("192.168.1.100", ""))
	slice.Labels[discoveryv1.LabelManagedBy] = "endpointslicemirroring-controller.k8s.io"
	return svc, slice
}

// manyServices builds n Services with perService ready endpoints each, spread over 50
// nodes, with resourceVersions set (as from an API server).
// benchServiceTypes are the Service types of the datapath benchmarks: ClusterIP, and NodePort
// (nodePort 20000+i; every other Service with externalTrafficPolicy Local).
var benchServiceTypes = []corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort}

// manyServicesOfType is manyServices as Services of type t (see benchServiceTypes).
func manyServicesOfType(t corev1.ServiceType, n, perService int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	services, slices := manyServices(n, perService)
	if t == corev1.ServiceTypeNodePort {
		for i, svc := range services {
			svc.Spec.Type, svc.Spec.Ports[0].NodePort = corev1.ServiceTypeNodePort, int32(20000+i)
			if i%2 == 1 {
				svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}
		}
	}
	return services, slices
}

func manyServices(n, perService int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var services []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for i := 0; i < n; i++ {
		// From 10.96.1.0 on: 10.96.0.1 is the kubernetes Service's (the kube-proxy benchmarks
		// create these in an API server), and the named fixtures above use 10.96.0.x.
		a := i + 256
		svc := makeService(fmt.Sprintf("svc-%05d", i), fmt.Sprintf("10.%d.%d.%d", 96+a/65536, (a/256)%256, a%256), tcp("http", 80, 8080))
		svc.ResourceVersion, svc.UID = "1", types.UID("uid-"+strconv.Itoa(i))
		var eps []ep
		for j := 0; j < perService; j++ {
			k := i*perService + j
			node := fmt.Sprintf("node-%d", k%50) // one endpoint in 50 is on this node ("node-a")
			if k%50 == 0 {
				node = "node-a"
			}
			eps = append(eps, readyEP(fmt.Sprintf("10.%d.%d.%d", 128+k/65536, (k/256)%256, k%256), node))
		}
		slice := makeSlice(svc, svc.Name+"-1", eps...)
		slice.ResourceVersion = "1"
		services, slices = append(services, svc), append(slices, slice)
	}
	return services, slices
}

func seedNoEndpoints() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("empty-service", "10.96.0.50", tcp("http", 80, 8080))
	return svc, makeSlice(svc, "empty-service-1")
}

func seedLocalElsewhere() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("local-service", "10.96.0.60", tcp("http", 80, 8080))
	svc.Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
	return svc, makeSlice(svc, "local-service-1", readyEP("10.244.2.60", "node-b"))
}

func seedTerminating() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("draining-service", "10.96.0.70", tcp("http", 80, 8080))
	return svc, makeSlice(svc, "draining-service-1",
		ep{ip: "10.244.1.70", node: "node-a", serving: true, terminating: true},
		ep{ip: "10.244.1.71", node: "node-a", serving: false, terminating: true},
		ep{ip: "10.244.1.72", node: "node-a"})
}

func seedUDP() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("dns", "10.96.0.53", udp("dns", 53, 5353), tcp("dns-tcp", 53, 5353))
	return svc, makeSlice(svc, "dns-1", readyEP("10.244.2.53", "node-b"))
}

func seedIPv6() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := makeService("backend-v6", "fd00:10:96::10", tcp("", 80, 8080))
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	return svc, makeSlice(svc, "backend-v6-1", readyEP("fd00:10:244:1::10", "node-a"), readyEP("fd00:10:244:2::11", "node-b"))
}
