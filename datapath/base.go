package datapath

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// RenderBase returns the table-wide part of the family's table: hook chains, the
// dispatch maps, the masquerade logic and the dnat-mod-N chains the Services use. (The
// hairpin pairs, shared by Services, come from HairpinElements.)
func RenderBase(cfg Config, family corev1.IPFamily, services map[types.NamespacedName]*Fragment) *Fragment {
	return renderBase(cfg, family, countRefs(services))
}

func renderBase(cfg Config, family corev1.IPFamily, refs fragmentRefs) *Fragment {
	cfg = cfg.withDefaults()
	fi := infoFor(family)
	base := &Fragment{Sets: baseSets(cfg, fi)}
	base.Chains = append(hookChains(), fixedChains(cfg, fi)...)
	for _, c := range sortedSharedChains(refs.shared) {
		base.Chains = append(base.Chains, c.render(fi, cfg))
	}
	for _, ip := range nodePortIPs(cfg, fi) {
		base.Elements = append(base.Elements, Element{Set: nodePortIPsSet, Key: []string{ip}})
	}
	return base
}

func sortedSharedChains(refs map[sharedChain]int) []sharedChain {
	out := make([]sharedChain, 0, len(refs))
	for c := range refs {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b sharedChain) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.n, b.n), cmp.Compare(a.local, b.local), cmp.Compare(a.name(), b.name()))
	})
	return out
}

// nodePortIPs are the family's addresses of Config.NodePortAddresses, canonical; none
// means NodePorts answer on every local address.
func nodePortIPs(cfg Config, fi familyInfo) []string {
	var out []string
	for _, s := range cfg.NodePortAddresses {
		if ip := canonicalIP(strings.TrimSpace(s), fi.ipFamily); ip != "" && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

// baseSets declares the dispatch maps, the endpoint maps (four per protocol: by address or
// by NodePort, every endpoint or this node's), and the sets.
func baseSets(cfg Config, fi familyInfo) []SetDecl {
	dispatch := fi.addrType + " . inet_proto . inet_service : verdict"
	nodePortDispatch := "inet_proto . inet_service : verdict"
	var sets []SetDecl
	for _, m := range endpointMaps {
		for _, proto := range dnatProtocols {
			sets = append(sets, m.decl(fi, proto))
		}
	}
	sets = append(sets, []SetDecl{
		{Name: serviceIPsMap, Map: true, Type: dispatch},
		{Name: noEndpointServicesMap, Map: true, Type: dispatch},
		{Name: serviceNodePortsMap, Map: true, Type: nodePortDispatch},
		// Declared by type, not typeof: nft 1.0.6 refuses rules that use a map from the kernel
		// whose typeof has "th dport" in its value (see dnatProtocols).
		{Name: nodePortClusterIPsMap, Map: true, Type: "inet_proto . inet_service : " + fi.addrType},
		{Name: nodePortServicePortsMap, Map: true, Type: "inet_proto . inet_service : inet_service"},
		{Name: externalClusterIPsMap, Map: true, Type: fi.addrType + " . inet_proto . inet_service : " + fi.addrType},
		{Name: noEndpointNodePortsMap, Map: true, Type: nodePortDispatch},
		{Name: firewallIPsMap, Map: true, Type: dispatch},
		{Name: clusterIPsSet, Type: fi.addrType},
		{Name: hairpinSet, Type: fi.addrType + " . " + fi.addrType},
	}...)
	if len(nodePortIPs(cfg, fi)) > 0 {
		sets = append(sets, SetDecl{Name: nodePortIPsSet, Type: fi.addrType})
	}
	return sets
}

// dnatProtocols are the protocols with an endpoint map. The maps are per protocol
// because nft 1.0.6 rejects a rule that uses a map whose typeof holds "th dport" in
// its value once the map comes from the kernel ("conflicting protocols specified").
var dnatProtocols = []string{"tcp", "udp", "sctp"}

// ServiceEndpointsMapName is the map from ClusterIP . port . index to endpoint IP . port
// for one protocol.
func ServiceEndpointsMapName(proto string) string { return serviceEndpointsMap + "-" + proto }

// hookChains are the base chains; they only jump, so other tables still see every packet.
func hookChains() []Chain {
	newConn := []string{"ct state new jump " + endpointsCheckChain, "ct state new jump " + clusterIPsCheckChain}
	firewall := []string{"ct state new jump " + firewallCheckChain}
	return []Chain{
		// loadBalancerSourceRanges are checked before DNAT, while the destination is still the
		// load balancer's IP.
		{Name: filterPreroutingChain, Type: knftables.FilterType, Hook: knftables.PreroutingHook,
			Priority: knftables.DNATPriority + "-10", Rules: firewall},
		{Name: filterOutputPreDNATChain, Type: knftables.FilterType, Hook: knftables.OutputHook,
			Priority: knftables.DNATPriority + "-10", Rules: firewall},
		{Name: natPreroutingChain, Type: knftables.NATType, Hook: knftables.PreroutingHook, Priority: knftables.DNATPriority,
			Rules: []string{"jump " + servicesChain}},
		{Name: natOutputChain, Type: knftables.NATType, Hook: knftables.OutputHook, Priority: knftables.DNATPriority,
			Rules: []string{"jump " + servicesChain}},
		{Name: natPostroutingChain, Type: knftables.NATType, Hook: knftables.PostroutingHook, Priority: knftables.SNATPriority,
			Rules: []string{"jump " + masqueradingChain}},
		{Name: filterInputChain, Type: knftables.FilterType, Hook: knftables.InputHook, Priority: knftables.FilterPriority,
			Rules: []string{"ct state new jump " + nodePortEndpointsCheckChain, newConn[0]}},
		{Name: filterForwardChain, Type: knftables.FilterType, Hook: knftables.ForwardHook, Priority: knftables.FilterPriority,
			Rules: newConn},
		{Name: filterOutputChain, Type: knftables.FilterType, Hook: knftables.OutputHook, Priority: knftables.FilterPriority,
			Rules: newConn},
	}
}

func fixedChains(cfg Config, fi familyInfo) []Chain {
	mark := fmt.Sprintf("0x%x", uint32(1)<<uint(cfg.MasqueradeBit))
	return []Chain{
		{Name: servicesChain, Rules: []string{
			fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", fi.ipKeyword, serviceIPsMap),
			nodePortMatch(cfg, fi, true) + " meta l4proto . th dport vmap @" + serviceNodePortsMap}},
		{Name: nodePortEndpointsCheckChain, Rules: []string{
			nodePortMatch(cfg, fi, false) + " meta l4proto . th dport vmap @" + noEndpointNodePortsMap}},
		{Name: firewallCheckChain, Rules: []string{
			fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", fi.ipKeyword, firewallIPsMap)}},
		{Name: masqueradeCheckChain, Rules: masqueradeCheckRules(cfg, fi)},
		{Name: markForMasqChain, Rules: []string{"meta mark set meta mark | " + mark}},
		{Name: masqueradingChain, Rules: []string{
			fmt.Sprintf("ct status dnat %[1]s saddr . %[1]s daddr @%[2]s jump %[3]s", fi.ipKeyword, hairpinSet, markForMasqChain),
			fmt.Sprintf("meta mark & %s == 0 return", mark),
			// Clear the bit so that a packet re-entering the stack (tunnels) is not masqueraded twice.
			"meta mark set meta mark ^ " + mark,
			"masquerade fully-random",
		}},
		{Name: endpointsCheckChain, Rules: []string{
			fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", fi.ipKeyword, noEndpointServicesMap)}},
		{Name: clusterIPsCheckChain, Rules: clusterIPsCheckRules(cfg, fi)},
		{Name: rejectChain, Rules: []string{"reject"}},
		{Name: canaryChain, Rules: []string{"return"}},
	}
}

// nodePortMatch matches packets to the node's NodePort addresses: those of
// Config.NodePortAddresses, or every local address but loopback (kube-proxy does not serve
// NodePorts on loopback in nftables mode). In the filter input hook every packet is for a
// local address already.
func nodePortMatch(cfg Config, fi familyInfo, needLocal bool) string {
	if len(nodePortIPs(cfg, fi)) > 0 {
		return fmt.Sprintf("%s daddr @%s", fi.ipKeyword, nodePortIPsSet)
	}
	loopback := "127.0.0.0/8"
	if fi.ipFamily == corev1.IPv6Protocol {
		loopback = "::1"
	}
	match := fmt.Sprintf("%s daddr != %s", fi.ipKeyword, loopback)
	if needLocal {
		match = "fib daddr type local " + match
	}
	return match
}

// masqueradeCheckRules mark the connections whose source must be rewritten: all with
// MasqueradeAll; otherwise those from the node itself (after DNAT the kernel may route
// them out another interface than the source address belongs to) and those from
// outside the cluster CIDRs (the endpoint would answer them directly).
func masqueradeCheckRules(cfg Config, fi familyInfo) []string {
	if cfg.MasqueradeAll {
		return []string{"jump " + markForMasqChain}
	}
	rules := []string{"fib saddr type local jump " + markForMasqChain}
	if cidrs := cidrsOfFamily(cfg.ClusterCIDRs, fi.ipFamily); len(cidrs) > 0 {
		rules = append(rules, fmt.Sprintf("%s saddr != %s jump %s", fi.ipKeyword, nftSetLiteral(cidrs), markForMasqChain))
	}
	return rules
}

// clusterIPsCheckRules reject connections to a live ClusterIP on a port the Service
// does not have, and drop those to unallocated addresses of the Service CIDRs.
func clusterIPsCheckRules(cfg Config, fi familyInfo) []string {
	rules := []string{fmt.Sprintf("%s daddr @%s reject", fi.ipKeyword, clusterIPsSet)}
	if cidrs := cidrsOfFamily(cfg.ServiceCIDRs, fi.ipFamily); len(cidrs) > 0 {
		rules = append(rules, fmt.Sprintf("%s daddr %s drop", fi.ipKeyword, nftSetLiteral(cidrs)))
	}
	return rules
}

// cidrsOfFamily returns the valid CIDRs of the family, canonicalised.
func cidrsOfFamily(cidrs []string, family corev1.IPFamily) []string {
	var out []string
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(strings.TrimSpace(c))
		if err == nil && (n.IP.To4() != nil) == (family == corev1.IPv4Protocol) {
			out = append(out, n.String())
		}
	}
	return out
}

func nftSetLiteral(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

func sortedKeysOf[K cmp.Ordered, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// HairpinElements are the hairpin-endpoints elements of the Services: one pair per
// local endpoint IP, however many Services share it.
func HairpinElements(services map[types.NamespacedName]*Fragment) []Element {
	return hairpinElements(countRefs(services).hairpin)
}

func hairpinElements(hairpin map[string]int) []Element {
	out := make([]Element, 0, len(hairpin))
	for _, ip := range sortedKeysOf(hairpin) {
		out = append(out, hairpinElement(ip))
	}
	return out
}

func hairpinElement(ip string) Element { return Element{Set: hairpinSet, Key: []string{ip, ip}} }
