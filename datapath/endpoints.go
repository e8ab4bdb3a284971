package datapath

import (
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Endpoint is one address a Service port can send traffic to.
type Endpoint struct {
	IP       string
	Port     int32
	NodeName string
	// Ready, Serving and Terminating are the EndpointSlice conditions, with the API's
	// defaults applied (nil ready means ready; nil serving means ready).
	Ready, Serving, Terminating bool
}

// HostPort is "ip:port" (with brackets for IPv6).
func (e Endpoint) HostPort() string {
	return net.JoinHostPort(e.IP, strconv.Itoa(int(e.Port)))
}

// SlicesForService returns the EndpointSlices that belong to svc (same namespace,
// label kubernetes.io/service-name).
func SlicesForService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range slices {
		if s != nil && s.Namespace == svc.Namespace && s.Labels[discoveryv1.LabelServiceName] == svc.Name {
			out = append(out, s)
		}
	}
	return out
}

// ServicePortEndpoints returns the endpoints that traffic to port should go to, in a
// stable order. Like kube-proxy it uses ready endpoints and, only when there are none,
// endpoints that are serving and terminating (so connections drain during a rollout).
// localOnly (internalTrafficPolicy: Local) restricts the choice to endpoints on nodeName
// before that fallback. Slices must already belong to the Service (SlicesForService).
func ServicePortEndpoints(port *corev1.ServicePort, slices []*discoveryv1.EndpointSlice,
	addressType discoveryv1.AddressType, nodeName string, localOnly bool) []Endpoint {
	all := slicePortEndpoints(port, slices, addressType)
	if localOnly {
		all = filterEndpoints(all, func(e Endpoint) bool { return e.NodeName == nodeName })
	}
	if ready := filterEndpoints(all, func(e Endpoint) bool { return e.Ready }); len(ready) > 0 {
		return ready
	}
	return filterEndpoints(all, func(e Endpoint) bool { return e.Serving && e.Terminating })
}

// slicePortEndpoints lists every endpoint of the slices' port matching port by name and
// protocol, deduplicated by ip:port and sorted.
func slicePortEndpoints(port *corev1.ServicePort, slices []*discoveryv1.EndpointSlice,
	addressType discoveryv1.AddressType) []Endpoint {
	type ipPort struct {
		ip   string
		port int32
	}
	seen := map[ipPort]bool{}
	var out []Endpoint
	for _, slice := range slices {
		if slice.AddressType != addressType {
			continue
		}
		targetPort, ok := matchingSlicePort(port, slice.Ports)
		if !ok {
			continue
		}
		for i := range slice.Endpoints {
			for _, ep := range endpointsOf(&slice.Endpoints[i], targetPort, addressType) {
				if key := (ipPort{ep.IP, ep.Port}); !seen[key] {
					seen[key] = true
					out = append(out, ep)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].IP != out[j].IP {
			return out[i].IP < out[j].IP
		}
		return out[i].Port < out[j].Port
	})
	return out
}

// matchingSlicePort finds the slice port for a Service port: same name (both may be
// empty for single-port Services) and same protocol (nil means TCP).
func matchingSlicePort(port *corev1.ServicePort, ports []discoveryv1.EndpointPort) (int32, bool) {
	for _, p := range ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == port.Name && proto == port.Protocol && p.Port != nil && *p.Port > 0 && *p.Port < 65536 {
			return *p.Port, true
		}
	}
	return 0, false
}

// endpointsOf expands one slice endpoint into one Endpoint per valid address.
func endpointsOf(ep *discoveryv1.Endpoint, port int32, addressType discoveryv1.AddressType) []Endpoint {
	ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
	serving := ready
	if ep.Conditions.Serving != nil {
		serving = *ep.Conditions.Serving
	}
	terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
	node := ""
	if ep.NodeName != nil {
		node = *ep.NodeName
	}
	family := corev1.IPv4Protocol
	if addressType == discoveryv1.AddressTypeIPv6 {
		family = corev1.IPv6Protocol
	}
	out := make([]Endpoint, 0, len(ep.Addresses))
	for _, addr := range ep.Addresses {
		if ip := canonicalIP(addr, family); ip != "" {
			out = append(out, Endpoint{IP: ip, Port: port, NodeName: node,
				Ready: ready, Serving: serving, Terminating: terminating})
		}
	}
	return out
}

func filterEndpoints(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	var out []Endpoint
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}
