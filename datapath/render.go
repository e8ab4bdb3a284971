package datapath

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// Render returns the desired table for one family: every Service's fragment plus the
// base. It is RenderService for each Service followed by RenderBase. When two Services
// claim the same ClusterIP, the one first in namespace/name order wins.
func Render(cfg Config, family corev1.IPFamily, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) *Ruleset {
	cfg = cfg.withDefaults()
	rs := &Ruleset{Family: family, Services: map[types.NamespacedName]*Fragment{}}
	slicesByService := GroupSlices(slices)
	for key, svc := range UniqueClusterIPServices(services, family) {
		rs.Services[key] = RenderService(cfg, family, svc, slicesByService[key])
	}
	rs.refs = countRefs(rs.Services)
	rs.Base = renderBase(cfg, family, rs.refs)
	return rs
}

// GroupSlices indexes EndpointSlices by the Service they belong to (label
// kubernetes.io/service-name, same namespace).
func GroupSlices(slices []*discoveryv1.EndpointSlice) map[types.NamespacedName][]*discoveryv1.EndpointSlice {
	out := make(map[types.NamespacedName][]*discoveryv1.EndpointSlice, len(slices))
	for _, s := range slices {
		if s == nil {
			continue
		}
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			key := types.NamespacedName{Namespace: s.Namespace, Name: name}
			out[key] = append(out[key], s)
		}
	}
	return out
}

// UniqueClusterIPServices returns, by namespace/name, the Services that have a
// ClusterIP of the family. A ClusterIP held by two Services (the API server prevents
// it; a second owner would make the transaction fail) goes to the one first in
// namespace/name order.
func UniqueClusterIPServices(services []*corev1.Service, family corev1.IPFamily) map[types.NamespacedName]*corev1.Service {
	out := make(map[types.NamespacedName]*corev1.Service, len(services))
	owner := make(map[string]types.NamespacedName, len(services))
	for _, svc := range services {
		if svc == nil {
			continue
		}
		ip := ClusterIPOf(svc, family)
		if ip == "" {
			continue
		}
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		if prev, taken := owner[ip]; taken {
			if !lessName(key, prev) {
				continue
			}
			delete(out, prev)
		}
		owner[ip], out[key] = key, svc
	}
	return out
}

func lessName(a, b types.NamespacedName) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// ClusterIPOf returns the Service's ClusterIP of the family in canonical form, or ""
// (headless, ExternalName, not of that family, or invalid).
func ClusterIPOf(svc *corev1.Service, family corev1.IPFamily) string {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return ""
	}
	if len(svc.Spec.ClusterIPs) == 0 {
		return canonicalIP(svc.Spec.ClusterIP, family)
	}
	for _, s := range svc.Spec.ClusterIPs {
		if ip := canonicalIP(s, family); ip != "" {
			return ip
		}
	}
	return ""
}

// canonicalIP returns s in canonical form if it is an address of the family, else "".
// It allocates only when s is not canonical already.
func canonicalIP(s string, family corev1.IPFamily) string {
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return ""
	}
	if addr.Is4In6() {
		addr = addr.Unmap()
	}
	if addr.Is4() != (family == corev1.IPv4Protocol) {
		return ""
	}
	var buf [64]byte
	if canonical := addr.AppendTo(buf[:0]); string(canonical) != s {
		return string(canonical)
	}
	return s
}

// RenderService returns what one Service adds to the family's table, or nil if it has
// no ClusterIP of that family. slices must be the Service's own EndpointSlices.
func RenderService(cfg Config, family corev1.IPFamily, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) *Fragment {
	cfg = cfg.withDefaults()
	fi := infoFor(family)
	clusterIP := ClusterIPOf(svc, family)
	if clusterIP == "" {
		return nil
	}
	frag := &Fragment{clusterIP: clusterIP}
	frag.Elements = append(frag.Elements, Element{Set: clusterIPsSet, Key: []string{clusterIP}})
	// The API server refuses two ports with one protocol and number; should a Service have them
	// anyway, the first one wins (a second dispatch element for the key fails the whole sync).
	rendered := map[corev1.ServicePort]bool{}
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		if !supportedProtocol(port.Protocol) || port.Port <= 0 || port.Port > 65535 {
			continue
		}
		key := corev1.ServicePort{Protocol: port.Protocol, Port: port.Port}
		if rendered[key] {
			continue
		}
		rendered[key] = true
		renderServicePort(cfg, fi, svc, port, clusterIP, slices, frag)
	}
	return frag
}

func supportedProtocol(p corev1.Protocol) bool {
	return p == corev1.ProtocolTCP || p == corev1.ProtocolUDP || p == corev1.ProtocolSCTP
}

// renderServicePort adds the dispatch of one ClusterIP:port to frag.
func renderServicePort(cfg Config, fi familyInfo, svc *corev1.Service, port *corev1.ServicePort,
	clusterIP string, slices []*discoveryv1.EndpointSlice, frag *Fragment) {
	proto := strings.ToLower(string(port.Protocol))
	dispatchKey := []string{clusterIP, proto, strconv.Itoa(int(port.Port))}
	localOnly := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	eps, hints := selectEndpoints(slicePortEndpoints(port, slices, fi.addressType), cfg.node(), localOnly)
	frag.Hints = frag.Hints.and(hints)

	if port.Protocol == corev1.ProtocolUDP {
		frag.UDPPorts = append(frag.UDPPorts, UDPServicePort{ServiceIP: clusterIP, Port: port.Port, EndpointIPs: endpointIPs(eps)})
	}
	if len(eps) == 0 {
		frag.Elements = append(frag.Elements, Element{Set: noEndpointServicesMap, Key: dispatchKey,
			Value: []string{noEndpointVerdict(fi, port, slices, localOnly)}})
		return
	}
	for _, ep := range eps {
		if ep.NodeName == "" || ep.NodeName == cfg.NodeName {
			frag.HairpinIPs = append(frag.HairpinIPs, ep.IP)
		}
	}
	if timeout, sticky := affinityTimeout(svc); sticky {
		chain := renderAffinity(fi, ServicePortName(svc, port), proto, eps, timeout, frag)
		frag.Elements = append(frag.Elements, Element{Set: serviceIPsMap, Key: dispatchKey, Value: []string{"goto " + chain}})
		return
	}
	frag.DNATCounts = append(frag.DNATCounts, len(eps))
	frag.Elements = append(frag.Elements, Element{Set: serviceIPsMap, Key: dispatchKey, Value: []string{"goto " + DNATChainName(len(eps))}})
	for i, ep := range eps {
		frag.Elements = append(frag.Elements, Element{Set: ServiceEndpointsMapName(proto),
			Key:   []string{clusterIP, dispatchKey[2], strconv.Itoa(i)},
			Value: []string{ep.IP, strconv.Itoa(int(ep.Port))}})
	}
}

// noEndpointVerdict is what happens to a new connection to a Service port without
// usable endpoints: internalTrafficPolicy Local with endpoints only on other nodes drops
// (as kube-proxy does), everything else is rejected so that clients fail at once.
func noEndpointVerdict(fi familyInfo, port *corev1.ServicePort, slices []*discoveryv1.EndpointSlice, localOnly bool) string {
	if localOnly && len(ServicePortEndpoints(port, slices, fi.addressType, Node{}, false)) > 0 {
		return "drop"
	}
	return "goto " + rejectChain
}

// affinityTimeout reports whether the Service asks for ClientIP affinity, and for how long.
func affinityTimeout(svc *corev1.Service) (time.Duration, bool) {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0, false
	}
	cfg := svc.Spec.SessionAffinityConfig
	if cfg != nil && cfg.ClientIP != nil && cfg.ClientIP.TimeoutSeconds != nil && *cfg.ClientIP.TimeoutSeconds > 0 {
		return time.Duration(*cfg.ClientIP.TimeoutSeconds) * time.Second, true
	}
	return DefaultAffinityTimeout, true
}

// renderAffinity adds the service chain, endpoint chains and affinity sets of a sticky
// Service port and returns the service chain's name. A client found in an endpoint's
// set goes back to it; otherwise numgen picks one, and the endpoint chain records the
// client with a fresh timeout.
func renderAffinity(fi familyInfo, spn, proto string, eps []Endpoint, timeout time.Duration, frag *Fragment) string {
	svcChain := Chain{Name: ServiceChainName(spn), Rules: []string{"jump " + masqueradeCheckChain}}
	var pick []string
	for i, ep := range eps {
		epChain, set := EndpointChainName(spn, ep), AffinitySetName(spn, ep, timeout)
		frag.Sets = append(frag.Sets, SetDecl{Name: set, Type: fi.addrType,
			Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: timeout})
		frag.Chains = append(frag.Chains, Chain{Name: epChain, Rules: []string{
			fmt.Sprintf("update @%s { %s saddr }", set, fi.ipKeyword),
			fmt.Sprintf("meta l4proto %s dnat to %s", proto, ep.HostPort()),
		}})
		svcChain.Rules = append(svcChain.Rules, fmt.Sprintf("%s saddr @%s goto %s", fi.ipKeyword, set, epChain))
		// The space before each comma keeps the chain name a separate token for parsers.
		pick = append(pick, fmt.Sprintf("%d : goto %s", i, epChain))
	}
	svcChain.Rules = append(svcChain.Rules, fmt.Sprintf("numgen random mod %d vmap { %s }", len(eps), strings.Join(pick, " , ")))
	frag.Chains = append(frag.Chains, svcChain)
	return svcChain.Name
}

func endpointIPs(eps []Endpoint) []string {
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.IP)
	}
	return out
}
