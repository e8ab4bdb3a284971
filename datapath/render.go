package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	return renderKeeping(cfg, family, services, slices, nil)
}

// renderKeeping is Render with the slot counts keep gives each Service kept (see
// padSlots); keep may be nil.
func renderKeeping(cfg Config, family corev1.IPFamily, services []*corev1.Service, slices []*discoveryv1.EndpointSlice,
	keep func(types.NamespacedName) []portSlots) *Ruleset {
	cfg = cfg.withDefaults()
	rs := &Ruleset{Family: family, Services: map[types.NamespacedName]*Fragment{}}
	slicesByService := GroupSlices(slices)
	unique := UniqueClusterIPServices(services, family)
	renderServices(cfg, family, sortedNames(unique), unique, func(key types.NamespacedName) []*discoveryv1.EndpointSlice {
		return slicesByService[key]
	}, keep, map[string]bool{}, rs.Services)
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
			if compareNamespaceThenName(key, prev) >= 0 {
				continue
			}
			delete(out, prev)
		}
		owner[ip], out[key] = key, svc
	}
	return out
}

// sortedNames lists the map's keys in namespace/name order, the order in which Services
// claim external frontends (the first one holds a frontend two Services name).
func sortedNames[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	keys := make([]types.NamespacedName, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, compareNames)
	return keys
}

// compareNames orders Services as their "namespace/name" strings do, without building
// them (sorting 100k Services would build millions).
func compareNames(a, b types.NamespacedName) int {
	if a.Namespace == b.Namespace {
		return strings.Compare(a.Name, b.Name)
	}
	shorter, longer, sign := a.Namespace, b.Namespace, 1
	if len(shorter) > len(longer) {
		shorter, longer, sign = longer, shorter, -1
	}
	if !strings.HasPrefix(longer, shorter) {
		return strings.Compare(a.Namespace, b.Namespace)
	}
	// The shorter namespace's "/" meets a byte of the longer one.
	switch c := longer[len(shorter)]; {
	case c > '/':
		return -sign
	case c < '/':
		return sign
	}
	return strings.Compare(a.String(), b.String()) // a namespace with a "/": not valid, but ordered all the same
}

// renderServices renders the Services keys names (in namespace/name order) into out,
// each claiming the external frontends it names that held leaves it, in that order.
// services and slicesOf give each Service and its EndpointSlices, keep (if not nil) the
// slot counts it keeps.
//
// The Services are rendered across the CPUs, since a full sync renders all of them: each
// as if no frontend were held, and then, in order, again with the held frontends left
// out if it names one (rare: two Services naming one external IP and port). That gives
// what rendering one after the other gives, since renderService leaves out just the
// frontends taken reports held.
func renderServices(cfg Config, family corev1.IPFamily, keys []types.NamespacedName, services map[types.NamespacedName]*corev1.Service,
	slicesOf func(types.NamespacedName) []*discoveryv1.EndpointSlice, keep func(types.NamespacedName) []portSlots,
	held map[string]bool, out map[types.NamespacedName]*Fragment) {
	cfg = cfg.withDefaults()
	if keep == nil {
		keep = func(types.NamespacedName) []portSlots { return nil }
	}
	rendered := renderConcurrently(cfg, family, keys, services, slicesOf, keep)
	for i, key := range keys {
		var f *Fragment
		if rendered != nil {
			f = rendered[i]
		}
		if rendered == nil || holdsAny(f, held) {
			f = renderService(cfg, family, services[key], slicesOf(key), takenIn(held), keep(key))
		}
		out[key] = claimFrontends(f, held)
	}
}

// minServicesPerWorker is the fewest Services worth a goroutine of their own.
const minServicesPerWorker = 64

// renderConcurrently renders the Services with no frontend taken, spread over up to
// GOMAXPROCS goroutines, or returns nil when there are too few Services to share.
func renderConcurrently(cfg Config, family corev1.IPFamily, keys []types.NamespacedName, services map[types.NamespacedName]*corev1.Service,
	slicesOf func(types.NamespacedName) []*discoveryv1.EndpointSlice, keep func(types.NamespacedName) []portSlots) []*Fragment {
	workers := min(runtime.GOMAXPROCS(0), len(keys)/minServicesPerWorker)
	if workers < 2 {
		return nil
	}
	out := make([]*Fragment, len(keys))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(keys); i += workers {
				out[i] = renderService(cfg, family, services[keys[i]], slicesOf(keys[i]), nil, keep(keys[i]))
			}
		})
	}
	wg.Wait()
	return out
}

// holdsAny tells whether f names a frontend in held.
func holdsAny(f *Fragment, held map[string]bool) bool {
	return f != nil && slices.ContainsFunc(f.frontends, func(k string) bool { return held[k] })
}

func takenIn(held map[string]bool) func(string) bool { return func(k string) bool { return held[k] } }

// claimFrontends marks the fragment's external frontends as held and returns it.
func claimFrontends(f *Fragment, held map[string]bool) *Fragment {
	if f != nil {
		for _, k := range f.frontends {
			held[k] = true
		}
	}
	return f
}

// compareNamespaceThenName orders Services by namespace, then name.
func compareNamespaceThenName(a, b types.NamespacedName) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
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
	return renderService(cfg, family, svc, slices, nil, nil)
}

// renderService is RenderService leaving out the external frontends (external IP .
// protocol . port, NodePorts) that taken says another Service holds: the API server lets
// two Services name one external IP, and a second dispatch element for a key would fail
// the whole sync. A port that had more endpoint slots in keep (the committed fragment's)
// than it has endpoints keeps that many (see padSlots).
func renderService(cfg Config, family corev1.IPFamily, svc *corev1.Service, slices []*discoveryv1.EndpointSlice,
	taken func(frontend string) bool, keep []portSlots) *Fragment {
	cfg = cfg.withDefaults()
	fi := infoFor(family)
	clusterIP := ClusterIPOf(svc, family)
	if clusterIP == "" {
		return nil
	}
	frag := &Fragment{clusterIP: clusterIP, Elements: make([]Element, 0, elementsEstimate(svc, slices))}
	frag.Elements = append(frag.Elements, Element{Set: clusterIPsSet, Key: []string{clusterIP}})
	ext := newExternalFrontends(cfg, fi, svc, clusterIP, frag)
	// A port's endpoints are needed only while it is rendered (the fragment keeps their
	// strings), so their array is reused: a full sync renders every Service.
	scratch := endpointScratch.Get().(*[]Endpoint)
	defer func() {
		clear((*scratch)[:cap(*scratch)]) // let go of the strings
		endpointScratch.Put(scratch)
	}()
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		if !supportedProtocol(port.Protocol) || port.Port <= 0 || port.Port > 65535 {
			continue
		}
		// The API server refuses two ports with one protocol and number; should a Service
		// have them anyway, the first one wins (a second dispatch element for the key fails
		// the whole sync).
		if repeatsEarlierPort(svc.Spec.Ports, i) {
			continue
		}
		all := appendSlicePortEndpoints(*scratch, port, slices, fi.addressType)
		if cap(all) > cap(*scratch) {
			*scratch = all[:0]
		}
		slots := renderServicePort(cfg, fi, svc, port, clusterIP, all, slotsOf(keep, port), frag)
		ext.renderPort(port, all, taken, slots)
	}
	return frag
}

// endpointScratch holds arrays for the endpoints of the port being rendered.
var endpointScratch = sync.Pool{New: func() any { return new([]Endpoint) }}

// elementsEstimate is about how many elements the Service renders: its ClusterIP, and
// for each port a dispatch element and one per endpoint, twice over when it has
// frontends outside the cluster. The fragment's array is made that size at once, since
// a full sync renders a hundred thousand elements.
func elementsEstimate(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) int {
	endpoints := 0
	for _, s := range slices {
		endpoints += len(s.Endpoints)
	}
	perPort := 1 + endpoints
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Spec.ExternalIPs) > 0 {
		perPort *= 2
	}
	return 1 + len(svc.Spec.Ports)*perPort
}

// repeatsEarlierPort tells whether a port before ports[i] has its protocol and number.
func repeatsEarlierPort(ports []corev1.ServicePort, i int) bool {
	for j := range i {
		if ports[j].Protocol == ports[i].Protocol && ports[j].Port == ports[i].Port {
			return true
		}
	}
	return false
}

func supportedProtocol(p corev1.Protocol) bool {
	return p == corev1.ProtocolTCP || p == corev1.ProtocolUDP || p == corev1.ProtocolSCTP
}

// renderServicePort adds the dispatch of one ClusterIP:port to frag; all are the port's
// endpoints before selection, keep the slot count to keep (see padSlots). It returns the
// port's slot count in @service-endpoints-<proto>, 0 when it has none.
func renderServicePort(cfg Config, fi familyInfo, svc *corev1.Service, port *corev1.ServicePort,
	clusterIP string, all []Endpoint, keep int, frag *Fragment) int {
	proto := protocolName(port.Protocol)
	dispatchKey := []string{clusterIP, proto, strconv.Itoa(int(port.Port))}
	localOnly := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	eps, hints := selectEndpoints(all, cfg.node(), localOnly)
	frag.Hints = frag.Hints.and(hints)

	if port.Protocol == corev1.ProtocolUDP {
		frag.UDPPorts = append(frag.UDPPorts, UDPServicePort{ServiceIP: clusterIP, Port: port.Port, ServingEndpoints: servingEndpoints(all)})
	}
	if len(eps) == 0 {
		frag.Elements = append(frag.Elements, Element{Set: noEndpointServicesMap, Key: dispatchKey,
			Value: []string{noEndpointVerdict(all, localOnly)}})
		return 0
	}
	addHairpins(cfg, eps, frag)
	if timeout, sticky := affinityTimeout(svc); sticky {
		spn := ServicePortName(svc, port)
		chain := renderAffinity(fi, ServiceChainName(spn), spn, proto, eps, timeout, true, frag)
		frag.Elements = append(frag.Elements, Element{Set: serviceIPsMap, Key: dispatchKey, Value: []string{"goto " + chain}})
		return 0
	}
	slots := padSlots(eps, keep)
	frag.slots = append(frag.slots, portSlots{protocol: port.Protocol, port: port.Port, n: len(slots)})
	frag.padded = frag.padded || len(slots) > len(eps)
	dnat := sharedChain{kind: dnatByAddress, n: len(slots)}
	frag.shared = append(frag.shared, dnat)
	frag.Elements = append(frag.Elements, Element{Set: serviceIPsMap, Key: dispatchKey, Value: []string{dnat.gotoVerdict()}})
	addEndpointElements(clusterByAddress, proto, dispatchKey[0], dispatchKey[2], slots, frag)
	return len(slots)
}

// portSlots is the number of endpoint slots one ClusterIP port spreads new connections
// over: the n of its dispatch to dnat-mod-n.
type portSlots struct {
	protocol corev1.Protocol
	port     int32
	n        int
}

// slotsOf is the slot count keep records for port, 0 if none.
func slotsOf(keep []portSlots, port *corev1.ServicePort) int {
	for _, s := range keep {
		if s.protocol == port.Protocol && s.port == port.Port {
			return s.n
		}
	}
	return 0
}

// padSlots returns eps, or when keep is larger, keep slots that cycle through eps.
//
// A port whose endpoint count falls would otherwise change its dispatch verdict to
// another dnat-mod-n chain, and a changed jump or goto verdict makes the kernel validate
// the whole table at commit: 36 ms at 100k Services, against under 1 ms for changing map
// elements alone. Keeping the slot count turns the removal of an endpoint into element
// updates only; its slots go to the remaining endpoints, some of which then get two
// shares of new connections until the Proxier renders the Service afresh (paddingHold).
func padSlots(eps []Endpoint, keep int) []Endpoint {
	if keep <= len(eps) || len(eps) == 0 {
		return eps
	}
	out := make([]Endpoint, keep)
	for i := range out {
		out[i] = eps[i%len(eps)]
	}
	return out
}

// addEndpointElements adds eps to the endpoint map m of proto under address . port
// (address "" for the maps keyed by NodePort).
func addEndpointElements(m endpointMap, proto, address, port string, eps []Endpoint, frag *Fragment) {
	if len(eps) == 0 {
		return
	}
	set, keyPrefix := m.mapName(proto), []string{port}
	if address != "" {
		keyPrefix = []string{address, port}
	}
	// The keys and values share one array: a full sync renders a million of them. Each is
	// capped to its own part.
	fields := make([]string, 0, (len(keyPrefix)+3)*len(eps))
	frag.Elements = slices.Grow(frag.Elements, len(eps))
	targetPort := ""
	for i, ep := range eps {
		if i == 0 || ep.Port != eps[i-1].Port {
			targetPort = strconv.Itoa(int(ep.Port))
		}
		k := len(fields)
		fields = append(append(fields, keyPrefix...), strconv.Itoa(i))
		v := len(fields)
		fields = append(fields, ep.IP, targetPort)
		frag.Elements = append(frag.Elements, Element{Set: set, Key: fields[k:v:v], Value: fields[v:len(fields):len(fields)]})
	}
}

// addHairpins records the endpoints on this node (or without a node), whose connections
// to themselves through a Service must be masqueraded.
func addHairpins(cfg Config, eps []Endpoint, frag *Fragment) {
	for _, ep := range eps {
		if ep.NodeName == "" || ep.NodeName == cfg.NodeName {
			frag.HairpinIPs = append(frag.HairpinIPs, ep.IP)
		}
	}
}

// noEndpointVerdict is what happens to a new connection to a Service port without
// usable endpoints: internalTrafficPolicy Local with endpoints only on other nodes drops
// (as kube-proxy does), everything else is rejected so that clients fail at once.
func noEndpointVerdict(all []Endpoint, localOnly bool) string {
	if localOnly && len(usable(all, func(Endpoint) bool { return true })) > 0 {
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

// renderAffinity adds the chain chainName that picks one of eps for a sticky Service
// port, with the endpoint chains and affinity sets it needs, and returns chainName. A
// client found in an endpoint's set goes back to it; otherwise numgen picks one, and the
// endpoint chain records the client with a fresh timeout. The endpoint chains and sets
// are per Service port, shared by its ClusterIP and external chains (as in kube-proxy,
// affinity holds whichever address the client used). masqueradeCheck is false for the
// chain of external traffic to local endpoints, whose source address is kept.
func renderAffinity(fi familyInfo, chainName, spn, proto string, eps []Endpoint, timeout time.Duration,
	masqueradeCheck bool, frag *Fragment) string {
	svcChain := Chain{Name: chainName}
	if masqueradeCheck {
		svcChain.Rules = []string{"jump " + masqueradeCheckChain}
	}
	var pick []string
	for i, ep := range eps {
		epChain, set := EndpointChainName(spn, ep), AffinitySetName(spn, ep, timeout)
		if !slices.ContainsFunc(frag.Chains, func(c Chain) bool { return c.Name == epChain }) {
			frag.Sets = append(frag.Sets, SetDecl{Name: set, Type: fi.addrType,
				Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: timeout})
			frag.Chains = append(frag.Chains, Chain{Name: epChain, Rules: []string{
				fmt.Sprintf("update @%s { %s saddr }", set, fi.ipKeyword),
				fmt.Sprintf("meta l4proto %s dnat to %s", proto, ep.HostPort()),
			}})
		}
		svcChain.Rules = append(svcChain.Rules, fmt.Sprintf("%s saddr @%s goto %s", fi.ipKeyword, set, epChain))
		// The space before each comma keeps the chain name a separate token for parsers.
		pick = append(pick, fmt.Sprintf("%d : goto %s", i, epChain))
	}
	svcChain.Rules = append(svcChain.Rules, fmt.Sprintf("numgen random mod %d vmap { %s }", len(eps), strings.Join(pick, " , ")))
	frag.Chains = append(frag.Chains, svcChain)
	return svcChain.Name
}

// servingEndpoints lists the "ip:port" of the serving endpoints, terminating or not.
func servingEndpoints(all []Endpoint) []string {
	out := make([]string, 0, len(all))
	for _, e := range all {
		if e.Serving {
			out = append(out, e.HostPort())
		}
	}
	return out
}
