package datapath

import (
	"fmt"
	"strings"
	"sync"
)

// sharedChain is a chain that every Service port needing the same step shares: a DNAT
// over one endpoint map among n endpoints, or the externalTrafficPolicy step of external
// traffic. Services add map elements, never rules, which is what keeps a sync of
// thousands of Services cheap; the chains in use are counted (fragmentRefs.shared) and
// rendered by the base.
type sharedChain struct {
	kind sharedKind
	// n is the endpoint count of the DNAT step; for the Local policy steps, the count of
	// endpoints traffic from this node and its pods goes to (all the Service's endpoints).
	n int
	// local is the count of this node's endpoints, for the Local policy steps.
	local int
	// toClusterIP, for the steps of external traffic, says that it goes to the endpoints of
	// the Service's ClusterIP: the DNAT step first rewrites the destination to the ClusterIP
	// (@external-cluster-ips; for NodePorts also the port, @nodeport-cluster-ips and
	// @nodeport-service-ports), then DNATs through @service-endpoints-<proto>, so an external
	// IP or NodePort adds one or two elements, not one per endpoint. It needs the ClusterIP's
	// endpoints to be the external ones (not so with internalTrafficPolicy Local); otherwise
	// the steps use endpoint lists of their own.
	toClusterIP bool
}

type sharedKind int

const (
	// dnatByAddress DNATs through @service-endpoints-<proto>, keyed daddr . dport . index:
	// ClusterIPs, and the external IPs of Services with externalTrafficPolicy Cluster.
	dnatByAddress sharedKind = iota
	// dnatLocalByAddress DNATs through @local-endpoints-<proto> (this node's endpoints of
	// external IPs with externalTrafficPolicy Local), keeping the client's source address.
	dnatLocalByAddress
	// dnatByNodePort and dnatLocalByNodePort are the same for NodePorts, keyed by
	// dport . index, since the node address the client used varies.
	dnatByNodePort
	dnatLocalByNodePort
	// masqueradeByAddress and masqueradeByNodePort mark external traffic with
	// externalTrafficPolicy Cluster for masquerading (the endpoint may be on another node,
	// whose answer must come back through this one), then DNAT.
	masqueradeByAddress
	masqueradeByNodePort
	// localPolicyByAddress and localPolicyByNodePort send external traffic with
	// externalTrafficPolicy Local to this node's endpoints; traffic from the node itself
	// (masqueraded) and from its pods goes to every endpoint, as it would through an
	// outside load balancer. Without local endpoints the chain ends, the packet is not
	// DNATed, and the filter drops it (no-endpoint maps).
	localPolicyByAddress
	localPolicyByNodePort
)

// gotoVerdict is "goto " and the chain's name, the value of dispatch elements. A full
// sync asks for one per Service port and there are few distinct ones, so each is made
// once and shared.
func (c sharedChain) gotoVerdict() string {
	if v, ok := sharedChainVerdicts.Load(c); ok {
		return v.(string)
	}
	v, _ := sharedChainVerdicts.LoadOrStore(c, "goto "+c.name())
	return v.(string)
}

// sharedChainVerdicts caches gotoVerdict by chain.
var sharedChainVerdicts sync.Map

// name is the chain's name in the table.
func (c sharedChain) name() string {
	byAddress, byNodePort := "", "nodeport-"
	if c.toClusterIP {
		byAddress, byNodePort = "cluster-ip-external-", "cluster-ip-nodeport-"
	}
	switch c.kind {
	case dnatLocalByAddress:
		return fmt.Sprintf("dnat-local-mod-%d", c.n)
	case dnatByNodePort:
		return fmt.Sprintf("dnat-%smod-%d", byNodePort, c.n)
	case dnatLocalByNodePort:
		return fmt.Sprintf("dnat-nodeport-local-mod-%d", c.n)
	case masqueradeByAddress:
		return fmt.Sprintf("masquerade-dnat-%smod-%d", byAddress, c.n)
	case masqueradeByNodePort:
		return fmt.Sprintf("masquerade-dnat-%smod-%d", byNodePort, c.n)
	case localPolicyByAddress:
		return fmt.Sprintf("local-policy-%s%d-%d", byAddress, c.n, c.local)
	case localPolicyByNodePort:
		return fmt.Sprintf("local-policy-%s%d-%d", byNodePort, c.n, c.local)
	}
	if c.toClusterIP {
		return fmt.Sprintf("dnat-%smod-%d", byAddress, c.n)
	}
	return DNATChainName(c.n)
}

// sharedChainPrefixes are the name prefixes of shared chains (see isSharedChain).
var sharedChainPrefixes = []string{"dnat-", "masquerade-dnat-", "local-policy-"}

// isSharedChain tells whether a chain is a shared one, which an incremental sync keeps
// even when no Service uses it any more (see removeStale).
func isSharedChain(name string) bool {
	for _, p := range sharedChainPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// uses lists the chain itself and the chains it jumps to, all of which must exist.
func (c sharedChain) uses() []sharedChain {
	switch c.kind {
	case masqueradeByAddress:
		return []sharedChain{c, {kind: dnatByAddress, n: c.n, toClusterIP: c.toClusterIP}}
	case masqueradeByNodePort:
		return []sharedChain{c, {kind: dnatByNodePort, n: c.n, toClusterIP: c.toClusterIP}}
	case localPolicyByAddress, localPolicyByNodePort:
		cluster, local := dnatByAddress, dnatLocalByAddress
		if c.kind == localPolicyByNodePort {
			cluster, local = dnatByNodePort, dnatLocalByNodePort
		}
		out := []sharedChain{c, {kind: cluster, n: c.n, toClusterIP: c.toClusterIP}}
		if c.local > 0 {
			out = append(out, sharedChain{kind: local, n: c.local})
		}
		return out
	}
	return []sharedChain{c}
}

// endpointMap names the four endpoint maps of one protocol.
type endpointMap int

const (
	clusterByAddress endpointMap = iota
	localByAddress
	clusterByNodePort
	localByNodePort
)

var endpointMaps = [...]endpointMap{clusterByAddress, localByAddress, clusterByNodePort, localByNodePort}

// mapName is the map's name for proto; the names for the protocols the rules use are
// made once (a full sync asks for one per Service port).
func (m endpointMap) mapName(proto string) string {
	if names, ok := endpointMapNames[proto]; ok {
		return names[m]
	}
	return m.composeName(proto)
}

// endpointMapNames holds composeName's results for tcp, udp and sctp.
var endpointMapNames = func() map[string][len(endpointMaps)]string {
	out := map[string][len(endpointMaps)]string{}
	for _, proto := range dnatProtocols {
		var names [len(endpointMaps)]string
		for _, m := range endpointMaps {
			names[m] = m.composeName(proto)
		}
		out[proto] = names
	}
	return out
}()

func (m endpointMap) composeName(proto string) string {
	switch m {
	case localByAddress:
		return "local-endpoints-" + proto
	case clusterByNodePort:
		return "nodeport-endpoints-" + proto
	case localByNodePort:
		return "nodeport-local-endpoints-" + proto
	}
	return ServiceEndpointsMapName(proto)
}

// key is the map's lookup expression without the index.
func (m endpointMap) key(fi familyInfo, proto string) string {
	if m == clusterByNodePort || m == localByNodePort {
		return proto + " dport"
	}
	return fmt.Sprintf("%s daddr . %s dport", fi.ipKeyword, proto)
}

func (m endpointMap) decl(fi familyInfo, proto string) SetDecl {
	return SetDecl{Name: m.mapName(proto), Map: true, TypeOf: fmt.Sprintf(
		"%s . numgen random mod 1 : %s daddr . %s dport", m.key(fi, proto), fi.ipKeyword, proto)}
}

// isEndpointMap tells whether a map holds endpoints by index (see planIncremental).
func isEndpointMap(name string) bool {
	for _, m := range endpointMaps {
		if strings.HasPrefix(name, strings.TrimSuffix(m.mapName("x"), "x")) {
			return true
		}
	}
	return false
}

// render returns the chain's rules.
func (c sharedChain) render(fi familyInfo, cfg Config) Chain {
	ch := Chain{Name: c.name()}
	dnat := func(m endpointMap, n int) {
		for _, proto := range dnatProtocols {
			ch.Rules = append(ch.Rules, fmt.Sprintf("dnat to %s . numgen random mod %d map @%s",
				m.key(fi, proto), n, m.mapName(proto)))
		}
	}
	switch c.kind {
	case dnatByAddress:
		ch.Rules = []string{"jump " + masqueradeCheckChain}
		if c.toClusterIP {
			ch.Rules = append(ch.Rules, fmt.Sprintf("%[1]s daddr set %[1]s daddr . meta l4proto . th dport map @%[2]s",
				fi.ipKeyword, externalClusterIPsMap))
		}
		dnat(clusterByAddress, c.n)
	case dnatByNodePort:
		ch.Rules = []string{"jump " + masqueradeCheckChain}
		if !c.toClusterIP {
			dnat(clusterByNodePort, c.n)
			break
		}
		for _, proto := range dnatProtocols {
			ch.Rules = append(ch.Rules, fmt.Sprintf(
				"meta l4proto %[1]s %[2]s daddr set meta l4proto . th dport map @%[3]s %[1]s dport set meta l4proto . th dport map @%[4]s",
				proto, fi.ipKeyword, nodePortClusterIPsMap, nodePortServicePortsMap))
		}
		dnat(clusterByAddress, c.n)
	case dnatLocalByAddress:
		dnat(localByAddress, c.n)
	case dnatLocalByNodePort:
		dnat(localByNodePort, c.n)
	case masqueradeByAddress, masqueradeByNodePort:
		next := c.uses()[1]
		ch.Rules = []string{"jump " + markForMasqChain, "goto " + next.name()}
	case localPolicyByAddress, localPolicyByNodePort:
		uses := c.uses()
		cluster := uses[1].name()
		if cidrs := cidrsOfFamily(cfg.ClusterCIDRs, fi.ipFamily); len(cidrs) > 0 {
			ch.Rules = append(ch.Rules, fmt.Sprintf("%s saddr %s goto %s", fi.ipKeyword, nftSetLiteral(cidrs), cluster))
		}
		ch.Rules = append(ch.Rules, "fib saddr type local jump "+markForMasqChain, "fib saddr type local goto "+cluster)
		if len(uses) > 2 {
			ch.Rules = append(ch.Rules, "goto "+uses[2].name())
		}
	}
	return ch
}
