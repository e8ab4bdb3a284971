package datapath

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Endpoint is one address a Service port can send traffic to.
type Endpoint struct {
	IP       string
	Port     int32
	NodeName string
	// ZoneHints and NodeHints are the slice's hints.forZones and hints.forNodes.
	ZoneHints, NodeHints []string
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

// Node is where the datapath runs: its name and its zone (label topology.kubernetes.io/zone,
// "" when unlabelled). Topology hints and internalTrafficPolicy: Local are read against it.
type Node struct {
	Name, Zone string
}

// HintUse says what a node made of a Service port's topology hints.
type HintUse int

const (
	// HintsAbsent: no ready endpoint carries a hint.
	HintsAbsent HintUse = iota
	// HintsUsed: traffic goes only to the endpoints hinted for this node or its zone.
	HintsUsed
	// HintsIgnored: hints are there but unusable here (not on every ready endpoint, none for
	// this node or zone, or internalTrafficPolicy: Local), so every endpoint is used.
	HintsIgnored
)

// ServicePortEndpoints returns the endpoints that traffic to port should go to, in a
// stable order. Slices must already belong to the Service (SlicesForService). It follows
// kube-proxy (pkg/proxy/topology.go):
//
//   - ready endpoints; only when there are none, endpoints that are serving and
//     terminating (so connections drain during a rollout);
//   - topology hints only when every ready endpoint carries one: with node hints on all of
//     them and at least one for this node, the ready endpoints hinted for this node;
//     otherwise, with zone hints on all of them and at least one for this node's zone, the
//     ready endpoints hinted for that zone; otherwise all ready endpoints (so the filter
//     never leaves a Service without endpoints while one is ready anywhere);
//   - localOnly (internalTrafficPolicy: Local) keeps only endpoints on this node, before
//     the terminating fallback, and ignores hints, as kube-proxy does.
func ServicePortEndpoints(port *corev1.ServicePort, slices []*discoveryv1.EndpointSlice,
	addressType discoveryv1.AddressType, node Node, localOnly bool) []Endpoint {
	eps, _ := selectEndpoints(slicePortEndpoints(port, slices, addressType), node, localOnly)
	return eps
}

// selectEndpoints applies ServicePortEndpoints' rules to a port's endpoints and says what
// became of the hints.
func selectEndpoints(all []Endpoint, node Node, localOnly bool) ([]Endpoint, HintUse) {
	use := HintsAbsent
	if localOnly {
		if anyReadyHinted(all) {
			use = HintsIgnored
		}
		all = filterEndpoints(all, func(e Endpoint) bool { return e.NodeName == node.Name })
		return usable(all, func(Endpoint) bool { return true }), use
	}
	available, mode := topologyFilter(all, node)
	switch {
	case mode != "":
		use = HintsUsed
	case anyReadyHinted(all):
		use = HintsIgnored
	}
	return usable(all, available), use
}

// usable keeps the ready endpoints that pass available or, if none is ready at all, the
// serving terminating ones.
func usable(all []Endpoint, available func(Endpoint) bool) []Endpoint {
	if ready := filterEndpoints(all, func(e Endpoint) bool { return e.Ready && available(e) }); len(ready) > 0 {
		return ready
	}
	return filterEndpoints(all, func(e Endpoint) bool { return e.Serving && e.Terminating })
}

// topologyFilter picks the hints to follow on node ("PreferSameNode", "PreferSameZone" or
// "" for none) and returns the matching availability test.
func topologyFilter(all []Endpoint, node Node) (func(Endpoint) bool, string) {
	allNodeHints, allZoneHints, forNode, forZone, anyReady := true, true, false, false, false
	for _, e := range all {
		if !e.Ready {
			continue
		}
		anyReady = true
		if len(e.NodeHints) == 0 {
			allNodeHints = false
		} else if slices.Contains(e.NodeHints, node.Name) {
			forNode = true
		}
		if len(e.ZoneHints) == 0 {
			allZoneHints = false
		} else if slices.Contains(e.ZoneHints, node.Zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
	case allNodeHints && forNode:
		return func(e Endpoint) bool { return slices.Contains(e.NodeHints, node.Name) }, corev1.ServiceTrafficDistributionPreferSameNode
	case allZoneHints && forZone:
		return func(e Endpoint) bool { return slices.Contains(e.ZoneHints, node.Zone) }, corev1.ServiceTrafficDistributionPreferSameZone
	}
	return func(Endpoint) bool { return true }, ""
}

// and is what a Service makes of its hints given two of its ports': used if either uses them.
func (h HintUse) and(other HintUse) HintUse {
	switch {
	case h == HintsUsed || other == HintsUsed:
		return HintsUsed
	case h == HintsIgnored || other == HintsIgnored:
		return HintsIgnored
	}
	return HintsAbsent
}

func anyReadyHinted(all []Endpoint) bool {
	for _, e := range all {
		if e.Ready && (len(e.ZoneHints) > 0 || len(e.NodeHints) > 0) {
			return true
		}
	}
	return false
}

// slicePortEndpoints lists every endpoint of the slices' port matching port by name and
// protocol, deduplicated by ip:port and sorted.
func slicePortEndpoints(port *corev1.ServicePort, endpointSlices []*discoveryv1.EndpointSlice,
	addressType discoveryv1.AddressType) []Endpoint {
	return appendSlicePortEndpoints(nil, port, endpointSlices, addressType)
}

// appendSlicePortEndpoints is slicePortEndpoints writing into out's array (from its
// start), so that a caller can use one array for many ports.
func appendSlicePortEndpoints(out []Endpoint, port *corev1.ServicePort, endpointSlices []*discoveryv1.EndpointSlice,
	addressType discoveryv1.AddressType) []Endpoint {
	out = out[:0]
	for _, slice := range endpointSlices {
		if slice.AddressType != addressType {
			continue
		}
		targetPort, ok := matchingSlicePort(port, slice.Ports)
		if !ok {
			continue
		}
		out = slices.Grow(out, len(slice.Endpoints))
		for i := range slice.Endpoints {
			out = appendEndpoints(out, &slice.Endpoints[i], targetPort, addressType)
		}
	}
	// An address in two slices (one being replaced by the other) counts once; the copy
	// that is not terminating wins, else the first, as in kube-proxy. The stable sort keeps
	// the copies in the order they came.
	slices.SortStableFunc(out, func(a, b Endpoint) int {
		return cmp.Or(strings.Compare(a.IP, b.IP), cmp.Compare(a.Port, b.Port))
	})
	kept := out[:0]
	for _, ep := range out {
		if last := len(kept) - 1; last >= 0 && kept[last].IP == ep.IP && kept[last].Port == ep.Port {
			if kept[last].Terminating && !ep.Terminating {
				kept[last] = ep
			}
			continue
		}
		kept = append(kept, ep)
	}
	if len(kept) == 0 {
		return nil // as without addresses: no endpoints, whatever was allocated for them
	}
	return kept
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

// appendEndpoints appends to out one Endpoint per valid address of a slice endpoint.
func appendEndpoints(out []Endpoint, ep *discoveryv1.Endpoint, port int32, addressType discoveryv1.AddressType) []Endpoint {
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
	var zoneHints, nodeHints []string
	if ep.Hints != nil {
		for _, z := range ep.Hints.ForZones {
			zoneHints = append(zoneHints, z.Name)
		}
		for _, n := range ep.Hints.ForNodes {
			nodeHints = append(nodeHints, n.Name)
		}
	}
	family := corev1.IPv4Protocol
	if addressType == discoveryv1.AddressTypeIPv6 {
		family = corev1.IPv6Protocol
	}
	for _, addr := range ep.Addresses {
		if ip := canonicalIP(addr, family); ip != "" {
			out = append(out, Endpoint{IP: ip, Port: port, NodeName: node, ZoneHints: zoneHints, NodeHints: nodeHints,
				Ready: ready, Serving: serving, Terminating: terminating})
		}
	}
	return out
}

// filterEndpoints returns the endpoints keep accepts: eps itself when it accepts them all
// (the usual case, so no copy), nil when none.
func filterEndpoints(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	for i := range eps {
		if keep(eps[i]) {
			continue
		}
		var out []Endpoint
		if i > 0 {
			out = append(make([]Endpoint, 0, len(eps)-1), eps[:i]...)
		}
		for _, e := range eps[i+1:] {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	if len(eps) == 0 {
		return nil
	}
	return eps
}
