package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// Names in the node agent's nftables table (see go doc ./datapath).
const (
	// NFTTableName is the node agent's table, in family ip and ip6.
	NFTTableName = "kube-clusterip"
	// nftServiceIPsMap dispatches ClusterIP . protocol . port to a chain.
	nftServiceIPsMap = "service-ips"
	// nftNoEndpointsMap holds the Service ports without endpoints (rejected).
	nftNoEndpointsMap = "no-endpoint-services"
	// nftEndpointsMapPrefix + protocol maps ClusterIP . port . index to endpoint IP . port.
	nftEndpointsMapPrefix = "service-endpoints-"
	// nftDNATChainPrefix + N is the chain that picks one of N endpoints from the map above.
	nftDNATChainPrefix = "dnat-mod-"
)

// ServicePortKey is one ClusterIP:port/protocol as the table dispatches it.
type ServicePortKey struct {
	IP       string
	Protocol string // lower case: tcp, udp, sctp
	Port     int
}

// String is the key as messages show it: "10.96.0.10:80/tcp".
func (k ServicePortKey) String() string {
	return net.JoinHostPort(k.IP, strconv.Itoa(k.Port)) + "/" + k.Protocol
}

// NodeTable is what diagnose needs of a node's nftables table: where each Service port goes.
type NodeTable struct {
	// ServiceChains maps a Service port to the chain service-ips sends it to.
	ServiceChains map[ServicePortKey]string
	// NoEndpoints holds the Service ports the table rejects for lack of endpoints.
	NoEndpoints map[ServicePortKey]bool
	// MapEndpoints maps a Service port and an index to an endpoint "IP:port" (service-endpoints-<proto>).
	MapEndpoints map[ServicePortKey]map[int]string
	// Chains maps a chain to the chains its rules jump or go to and the "IP:port" they DNAT to.
	Chains map[string]*ChainSummary
}

// ChainSummary is what a chain's rules do that diagnose follows.
type ChainSummary struct {
	Targets []string
	DNAT    []string
}

// NewNodeTable is an empty table.
func NewNodeTable() *NodeTable {
	return &NodeTable{
		ServiceChains: map[ServicePortKey]string{},
		NoEndpoints:   map[ServicePortKey]bool{},
		MapEndpoints:  map[ServicePortKey]map[int]string{},
		Chains:        map[string]*ChainSummary{},
	}
}

// ReadMaps adds the elements of the node agent's dispatch and endpoint maps, listed through
// knftables (the node's table, or a knftables.Fake in tests). A table that does not exist is
// knftables' not-found error.
func (t *NodeTable) ReadMaps(ctx context.Context, nft knftables.Interface) error {
	maps, err := nft.List(ctx, "maps")
	if err != nil {
		return err
	}
	for _, name := range maps {
		if name != nftServiceIPsMap && name != nftNoEndpointsMap && !strings.HasPrefix(name, nftEndpointsMapPrefix) {
			continue
		}
		elements, err := nft.ListElements(ctx, "map", name)
		if err != nil {
			return fmt.Errorf("list the elements of map %s: %w", name, err)
		}
		t.addElements(name, elements)
	}
	return nil
}

func (t *NodeTable) addElements(mapName string, elements []*knftables.Element) {
	for _, e := range elements {
		if len(e.Key) != 3 {
			continue
		}
		switch {
		case mapName == nftServiceIPsMap:
			if target := verdictTarget(e.Value); target != "" {
				t.ServiceChains[ServicePortKey{IP: e.Key[0], Protocol: protocolName(e.Key[1]), Port: number(e.Key[2])}] = target
			}
		case mapName == nftNoEndpointsMap:
			t.NoEndpoints[ServicePortKey{IP: e.Key[0], Protocol: protocolName(e.Key[1]), Port: number(e.Key[2])}] = true
		case len(e.Value) == 2:
			sp := ServicePortKey{IP: e.Key[0], Protocol: strings.TrimPrefix(mapName, nftEndpointsMapPrefix), Port: number(e.Key[1])}
			if t.MapEndpoints[sp] == nil {
				t.MapEndpoints[sp] = map[int]string{}
			}
			t.MapEndpoints[sp][number(e.Key[2])] = net.JoinHostPort(e.Value[0], e.Value[1])
		}
	}
}

// AddRulesJSON adds the rules of `nft -j list table <family> kube-clusterip`: the chains and
// what they jump to and DNAT to. knftables lists rules without their bodies, so these are read
// from nft's JSON.
func (t *NodeTable) AddRulesJSON(data []byte) error {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse nft -j output: %w", err)
	}
	for _, object := range doc.Nftables {
		if raw, ok := object["rule"]; ok {
			if err := t.addRule(raw); err != nil {
				return fmt.Errorf("parse nft -j output: %w", err)
			}
		}
	}
	return nil
}

func (t *NodeTable) addRule(raw json.RawMessage) error {
	var r struct {
		Chain string `json:"chain"`
		Expr  []any  `json:"expr"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	chain := t.Chains[r.Chain]
	if chain == nil {
		chain = &ChainSummary{}
		t.Chains[r.Chain] = chain
	}
	walkJSON(r.Expr, func(key string, value any) {
		switch key {
		case "jump", "goto":
			if target := str(field(value, "target")); target != "" {
				chain.Targets = append(chain.Targets, target)
			}
		case "dnat":
			if addr, ok := field(value, "addr").(string); ok {
				chain.DNAT = append(chain.DNAT, net.JoinHostPort(addr, strconv.Itoa(number(field(value, "port")))))
			}
		}
	})
	return nil
}

// Endpoints are the "IP:port" endpoints the table sends a Service port to, sorted, and whether
// the port is programmed at all.
func (t *NodeTable) Endpoints(key ServicePortKey) ([]string, bool) {
	chain, ok := t.ServiceChains[key]
	if !ok {
		return nil, false
	}
	seen := map[string]bool{}
	if n, err := strconv.Atoi(strings.TrimPrefix(chain, nftDNATChainPrefix)); err == nil && strings.HasPrefix(chain, nftDNATChainPrefix) {
		for i := range n {
			if ep, ok := t.MapEndpoints[key][i]; ok {
				seen[ep] = true
			}
		}
	} else {
		t.collectDNAT(chain, seen, map[string]bool{})
	}
	return slices.Sorted(maps.Keys(seen)), true
}

// collectDNAT gathers the DNAT destinations reachable from a chain (affinity Services go through
// service-… and endpoint-… chains).
func (t *NodeTable) collectDNAT(chain string, into, visited map[string]bool) {
	if visited[chain] || t.Chains[chain] == nil {
		return
	}
	visited[chain] = true
	for _, dest := range t.Chains[chain].DNAT {
		into[dest] = true
	}
	for _, target := range t.Chains[chain].Targets {
		t.collectDNAT(target, into, visited)
	}
}

// walkJSON calls visit for every key of every object nested in v.
func walkJSON(v any, visit func(key string, value any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			visit(k, child)
			walkJSON(child, visit)
		}
	case []any:
		for _, child := range v {
			walkJSON(child, visit)
		}
	}
}

// verdictTarget is the chain of a "goto CHAIN" or "jump CHAIN" map value.
func verdictTarget(value []string) string {
	if len(value) != 1 {
		return ""
	}
	verdict, target, _ := strings.Cut(value[0], " ")
	if verdict != "goto" && verdict != "jump" {
		return ""
	}
	return target
}

func field(v any, key string) any {
	if m, ok := v.(map[string]any); ok {
		return m[key]
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func number(v any) int {
	switch v := v.(type) {
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

// protocolName is an inet_proto value as nft lists it: a name, or a number for some.
func protocolName(v string) string {
	switch strings.ToLower(v) {
	case "6", "tcp":
		return "tcp"
	case "17", "udp":
		return "udp"
	case "132", "sctp":
		return "sctp"
	}
	return strings.ToLower(v)
}

// UsableEndpoints are the "IP:port" endpoints a node should send a Service port to, from the
// Service's EndpointSlices: exactly the datapath's choice (datapath.ServicePortEndpoints), so ready
// ones, else serving terminating ones, topology hints for the node's name and zone, and with
// internalTrafficPolicy Local only those on the node.
func UsableEndpoints(svc *corev1.Service, port corev1.ServicePort, slices []*discoveryv1.EndpointSlice, family corev1.IPFamily, node datapath.Node) []string {
	local := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	var out []string
	for _, e := range datapath.ServicePortEndpoints(&port, slices, discoveryv1.AddressType(family), node, local) {
		out = append(out, e.HostPort())
	}
	sort.Strings(out)
	return out
}

// checkDatapath compares, for each ClusterIP and port, what the node's table does with what the
// EndpointSlices say.
func checkDatapath(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, table *NodeTable, node datapath.Node) findings {
	nodeName := node.Name
	var out findings
	const fixAgent = "check the node agent on this node (kube-clusterip --datapath): its logs and /healthz; it resyncs the table on its own"
	for _, ip := range clusterIPs(svc) {
		family := endpointrules.FamilyOf(ip)
		for _, port := range svc.Spec.Ports {
			key := ServicePortKey{IP: ip, Protocol: strings.ToLower(string(endpointrules.ServicePortProtocol(&port))), Port: int(port.Port)}
			want := UsableEndpoints(svc, port, slices, family, node)
			have, programmed := table.Endpoints(key)
			switch {
			case !programmed && len(want) == 0 && table.NoEndpoints[key]:
				out.ok(CheckDatapath, "node %s rejects %s: no usable endpoint, as the EndpointSlices say", nodeName, key)
			case !programmed && len(want) == 0:
				out.warn(CheckDatapath, fmt.Sprintf("node %s has neither a %s nor a %s element for %s (the EndpointSlices list no usable endpoint)", nodeName, nftServiceIPsMap, nftNoEndpointsMap, key), fixAgent)
			case !programmed:
				out.problem(CheckDatapath, fmt.Sprintf("node %s does not program %s: map %s has no element for it, though the EndpointSlices list %s", nodeName, key, nftServiceIPsMap, strings.Join(want, ", ")), fixAgent)
			case strings.Join(have, ",") != strings.Join(want, ","):
				out.problem(CheckDatapath, fmt.Sprintf("node %s sends %s to [%s], the EndpointSlices say [%s]", nodeName, key, strings.Join(have, ", "), strings.Join(want, ", ")), fixAgent)
			default:
				out.ok(CheckDatapath, "node %s sends %s to %s, as the EndpointSlices say", nodeName, key, strings.Join(have, ", "))
			}
		}
	}
	return out
}

// clusterIPs are the Service's ClusterIPs, none for headless and ExternalName Services.
func clusterIPs(svc *corev1.Service) []string {
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	if len(svc.Spec.ClusterIPs) > 0 {
		return svc.Spec.ClusterIPs
	}
	return []string{svc.Spec.ClusterIP}
}
