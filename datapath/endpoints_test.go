package datapath

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

func TestServicePortEndpoints(t *testing.T) {
	svc := makeService("web", "10.96.0.9", tcp("http", 80, 8080), udp("dns", 53, 5353))
	http, dns := &svc.Spec.Ports[0], &svc.Spec.Ports[1]
	terminating := ep{ip: "10.244.1.3", node: "node-a", serving: true, terminating: true}
	notServing := ep{ip: "10.244.1.4", node: "node-a", terminating: true}
	cases := []struct {
		name      string
		port      *corev1.ServicePort
		slices    []*discoveryv1.EndpointSlice
		localOnly bool
		want      []string // ip:port
	}{
		{name: "ready endpoints, sorted, at the slice's port for that name",
			port:   http,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.2.1", "node-b"), readyEP("10.244.1.1", "node-a"))},
			want:   []string{"10.244.1.1:8080", "10.244.2.1:8080"}},
		{name: "port matched by name and protocol",
			port:   dns,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.1.1", "node-a"))},
			want:   []string{"10.244.1.1:5353"}},
		{name: "an address in two slices counts once",
			port: http,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.1.1", "node-a")),
				makeSlice(svc, "b", readyEP("10.244.1.1", "node-a"))},
			want: []string{"10.244.1.1:8080"}},
		{name: "not-ready endpoints are left out while a ready one exists",
			port:   http,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.1.1", "node-a"), terminating)},
			want:   []string{"10.244.1.1:8080"}},
		{name: "none ready: serving terminating ones, never non-serving ones",
			port:   http,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", terminating, notServing)},
			want:   []string{"10.244.1.3:8080"}},
		{name: "internalTrafficPolicy Local keeps this node's endpoints",
			port:      http,
			slices:    []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.2.1", "node-b"), readyEP("10.244.1.1", "node-a"))},
			localOnly: true,
			want:      []string{"10.244.1.1:8080"}},
		{name: "internalTrafficPolicy Local without local endpoints: none",
			port:      http,
			slices:    []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("10.244.2.1", "node-b"))},
			localOnly: true},
		{name: "addresses of the other family and invalid ones are ignored",
			port:   http,
			slices: []*discoveryv1.EndpointSlice{makeSlice(svc, "a", readyEP("fd00::1", "node-a"), readyEP("nonsense", "node-a"), readyEP("10.244.1.1", "node-a"))},
			want:   []string{"10.244.1.1:8080"}},
		{name: "a slice without the port name contributes nothing",
			port: http,
			slices: func() []*discoveryv1.EndpointSlice {
				s := makeSlice(svc, "a", readyEP("10.244.1.1", "node-a"))
				s.Ports = []discoveryv1.EndpointPort{{Name: knftables.PtrTo("other"), Port: knftables.PtrTo(int32(1))}}
				return []*discoveryv1.EndpointSlice{s}
			}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range ServicePortEndpoints(tc.port, tc.slices, discoveryv1.AddressTypeIPv4, Node{Name: "node-a"}, tc.localOnly) {
				got = append(got, e.HostPort())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// hinted is a ready endpoint on node in zone, hinted for that zone and that node as
// PreferSameNode hints it.
func hinted(ip, node, zone string) ep {
	e := readyEP(ip, node)
	e.zones, e.nodes = []string{zone}, []string{node}
	return e
}

// zoneHinted is a ready endpoint hinted for its zone only, as PreferSameZone hints it.
func zoneHinted(ip, node, zone string) ep {
	e := readyEP(ip, node)
	e.zones = []string{zone}
	return e
}

func TestServicePortEndpointsFollowTopologyHints(t *testing.T) {
	svc := makeService("web", "10.96.0.9", tcp("http", 80, 8080))
	http := &svc.Spec.Ports[0]
	here := Node{Name: "node-a", Zone: "zone-a"}
	notReady := func(e ep) ep { e.ready, e.serving = false, false; return e }
	servingTerminating := func(e ep) ep { e.ready, e.serving, e.terminating = false, true, true; return e }
	cases := []struct {
		name      string
		node      Node
		eps       []ep
		localOnly bool
		want      []string // IPs
		wantUse   HintUse
	}{
		{name: "no hints: every ready endpoint",
			node: here, eps: []ep{readyEP("10.244.1.1", "node-a"), readyEP("10.244.2.1", "node-b")},
			want: []string{"10.244.1.1", "10.244.2.1"}, wantUse: HintsAbsent},
		{name: "PreferSameZone: only the ready endpoints hinted for this node's zone",
			node: here, eps: []ep{zoneHinted("10.244.1.1", "node-a", "zone-a"), zoneHinted("10.244.1.2", "node-c", "zone-a"), zoneHinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1", "10.244.1.2"}, wantUse: HintsUsed},
		{name: "PreferSameNode: only the ready endpoints hinted for this node",
			node: here, eps: []ep{hinted("10.244.1.1", "node-a", "zone-a"), hinted("10.244.1.2", "node-c", "zone-a"), hinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1"}, wantUse: HintsUsed},
		{name: "PreferSameNode without an endpoint for this node: same zone next",
			node: here, eps: []ep{hinted("10.244.1.2", "node-c", "zone-a"), hinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.2"}, wantUse: HintsUsed},
		{name: "PreferSameNode without an endpoint for this node or zone: all ready endpoints",
			node: here, eps: []ep{hinted("10.244.2.1", "node-b", "zone-b"), hinted("10.244.3.1", "node-d", "zone-c")},
			want: []string{"10.244.2.1", "10.244.3.1"}, wantUse: HintsIgnored},
		{name: "hints only when every ready endpoint carries one",
			node: here, eps: []ep{zoneHinted("10.244.1.1", "node-a", "zone-a"), readyEP("10.244.2.1", "node-b")},
			want: []string{"10.244.1.1", "10.244.2.1"}, wantUse: HintsIgnored},
		{name: "node hints count only when every ready endpoint has one; zone hints still apply",
			node: here, eps: []ep{hinted("10.244.1.1", "node-a", "zone-a"), zoneHinted("10.244.1.2", "node-c", "zone-a"), zoneHinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1", "10.244.1.2"}, wantUse: HintsUsed},
		{name: "not-ready endpoints need no hints, and are never chosen",
			node: here, eps: []ep{zoneHinted("10.244.1.1", "node-a", "zone-a"), notReady(readyEP("10.244.1.9", "node-a")), zoneHinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1"}, wantUse: HintsUsed},
		{name: "fallback: no ready endpoint in this zone, so every ready endpoint",
			node: here, eps: []ep{notReady(zoneHinted("10.244.1.1", "node-a", "zone-a")), zoneHinted("10.244.2.1", "node-b", "zone-b"), zoneHinted("10.244.2.2", "node-b", "zone-b")},
			want: []string{"10.244.2.1", "10.244.2.2"}, wantUse: HintsIgnored},
		{name: "a node without a zone label ignores zone hints",
			node: Node{Name: "node-a"}, eps: []ep{zoneHinted("10.244.1.1", "node-a", "zone-a"), zoneHinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1", "10.244.2.1"}, wantUse: HintsIgnored},
		{name: "an endpoint hinted for several zones serves each of them",
			node: Node{Name: "node-b", Zone: "zone-b"}, eps: []ep{{ip: "10.244.1.1", node: "node-a", ready: true, serving: true, zones: []string{"zone-a", "zone-b"}}, zoneHinted("10.244.3.1", "node-c", "zone-c")},
			want: []string{"10.244.1.1"}, wantUse: HintsUsed},
		{name: "none ready: serving terminating endpoints, whatever their hints",
			node: here, eps: []ep{servingTerminating(zoneHinted("10.244.1.1", "node-a", "zone-a")), servingTerminating(zoneHinted("10.244.2.1", "node-b", "zone-b"))},
			want: []string{"10.244.1.1", "10.244.2.1"}, wantUse: HintsAbsent},
		{name: "internalTrafficPolicy Local ignores hints: this node's endpoints",
			node: here, localOnly: true, eps: []ep{zoneHinted("10.244.1.1", "node-a", "zone-a"), zoneHinted("10.244.1.2", "node-c", "zone-a"), zoneHinted("10.244.2.1", "node-b", "zone-b")},
			want: []string{"10.244.1.1"}, wantUse: HintsIgnored},
		{name: "internalTrafficPolicy Local without a local endpoint: none, even with hints for this zone",
			node: here, localOnly: true, eps: []ep{zoneHinted("10.244.1.2", "node-c", "zone-a")},
			want: nil, wantUse: HintsIgnored},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			slice := makeSlice(svc, "a", tc.eps...)
			all := slicePortEndpoints(http, []*discoveryv1.EndpointSlice{slice}, discoveryv1.AddressTypeIPv4)
			eps, use := selectEndpoints(all, tc.node, tc.localOnly)
			var got []string
			for _, e := range eps {
				got = append(got, e.IP)
			}
			if !reflect.DeepEqual(got, tc.want) || use != tc.wantUse {
				t.Errorf("got %v (hints %d), want %v (hints %d)", got, use, tc.want, tc.wantUse)
			}
			if exported := ServicePortEndpoints(http, []*discoveryv1.EndpointSlice{slice}, discoveryv1.AddressTypeIPv4, tc.node, tc.localOnly); !reflect.DeepEqual(exported, eps) {
				t.Errorf("ServicePortEndpoints disagrees: %v", exported)
			}
		})
	}
}

func TestUDPFrontendsToClean(t *testing.T) {
	cfg := Config{NodeName: "node-a"}
	svc := makeService("dns", "10.96.0.53", udp("dns", 53, 5353), tcp("dns-tcp", 53, 5353))
	svc.Spec.Type, svc.Spec.Ports[0].NodePort = corev1.ServiceTypeNodePort, 30053
	render := func(eps ...ep) *Ruleset {
		return Render(cfg, corev1.IPv4Protocol, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{makeSlice(svc, "s", eps...)})
	}
	a, b := readyEP("10.244.1.1", "node-a"), readyEP("10.244.1.2", "node-a")
	viaClusterIP := func(ip string) UDPFlow {
		return UDPFlow{OrigDstIP: "10.96.0.53", OrigDstPort: 53, ReplySrcIP: ip, ReplySrcPort: 5353}
	}
	viaNodePort := func(ip string) UDPFlow {
		return UDPFlow{OrigDstIP: "192.168.1.1", OrigDstPort: 30053, ReplySrcIP: ip, ReplySrcPort: 5353}
	}
	unrelated := UDPFlow{OrigDstIP: "10.96.0.54", OrigDstPort: 53, ReplySrcIP: "10.244.1.1", ReplySrcPort: 5353}
	flows := []UDPFlow{viaClusterIP("10.244.1.1"), viaClusterIP("10.244.1.2"), viaNodePort("10.244.1.1"), viaNodePort("10.244.1.2"), unrelated}
	cases := []struct {
		name       string
		have, want *Ruleset
		full       bool
		stale      []UDPFlow
	}{
		{name: "restart: the first full sync cleans flows to non-serving endpoints", have: nil, want: render(a), full: true,
			stale: []UDPFlow{viaClusterIP("10.244.1.2"), viaNodePort("10.244.1.2")}},
		{name: "an endpoint goes away", have: render(a, b), want: render(b),
			stale: []UDPFlow{viaClusterIP("10.244.1.1"), viaNodePort("10.244.1.1")}},
		{name: "an endpoint is added: nothing is stale", have: render(a), want: render(a, b)},
		{name: "the last endpoint goes away: NodePort flows are left (matched by port alone)", have: render(a), want: render(),
			stale: []UDPFlow{viaClusterIP("10.244.1.1"), viaClusterIP("10.244.1.2")}},
		{name: "a serving terminating endpoint keeps its flows", have: render(a, b),
			want: render(a, ep{ip: "10.244.1.2", node: "node-a", serving: true, terminating: true})},
		{name: "the Service is deleted", have: render(a), want: Render(cfg, corev1.IPv4Protocol, nil, nil),
			stale: []UDPFlow{viaClusterIP("10.244.1.1"), viaClusterIP("10.244.1.2")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frontends := udpFrontendsToClean(tc.have, tc.want, unionKeys(tc.have, tc.want), tc.full)
			var stale []UDPFlow
			for _, f := range flows {
				if frontends.StaleFlow(f) {
					stale = append(stale, f)
				}
			}
			if !reflect.DeepEqual(stale, tc.stale) {
				t.Errorf("stale %v, want %v", stale, tc.stale)
			}
		})
	}
}
