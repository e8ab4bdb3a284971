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
			for _, e := range ServicePortEndpoints(tc.port, tc.slices, discoveryv1.AddressTypeIPv4, "node-a", tc.localOnly) {
				got = append(got, e.HostPort())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStaleUDPFlows(t *testing.T) {
	cfg := Config{NodeName: "node-a"}
	svc := makeService("dns", "10.96.0.53", udp("dns", 53, 5353), tcp("dns-tcp", 53, 5353))
	render := func(eps ...ep) *Ruleset {
		return Render(cfg, corev1.IPv4Protocol, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{makeSlice(svc, "s", eps...)})
	}
	a, b := readyEP("10.244.1.1", "node-a"), readyEP("10.244.1.2", "node-a")
	flow := func(ip string) StaleUDPFlow { return StaleUDPFlow{ServiceIP: "10.96.0.53", Port: 53, EndpointIP: ip} }
	cases := []struct {
		name       string
		have, want *Ruleset
		flows      []StaleUDPFlow
	}{
		{name: "first sync: nothing is stale", have: nil, want: render(a), flows: nil},
		{name: "an endpoint goes away", have: render(a, b), want: render(b), flows: []StaleUDPFlow{flow("10.244.1.1")}},
		{name: "an endpoint is added: nothing is stale", have: render(a), want: render(a, b), flows: nil},
		{name: "the last endpoint goes away", have: render(a), want: render(), flows: []StaleUDPFlow{flow("10.244.1.1")}},
		{name: "the Service is deleted", have: render(a), want: Render(cfg, corev1.IPv4Protocol, nil, nil), flows: []StaleUDPFlow{flow("10.244.1.1")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := StaleUDPFlows(tc.have, tc.want); !reflect.DeepEqual(got, tc.flows) {
				t.Errorf("got %v, want %v", got, tc.flows)
			}
		})
	}
}
