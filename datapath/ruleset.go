package datapath

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// Ruleset is the desired content of one family's table: the table-wide objects plus
// one Fragment per Service. Keeping Services apart lets the Proxier diff only the
// Services whose inputs changed.
type Ruleset struct {
	Family corev1.IPFamily
	// Base holds the hook chains, the shared maps and sets, the dnat-mod-N chains in use
	// and the elements several Services share (hairpin pairs).
	Base *Fragment
	// Services maps each Service to what it adds.
	Services map[types.NamespacedName]*Fragment

	refs fragmentRefs // what Base was rendered from (set by the Proxier)
}

// Fragment is a group of table objects that is rendered, compared and replaced as one.
type Fragment struct {
	Chains   []Chain
	Sets     []SetDecl
	Elements []Element

	// shared lists the shared chains the fragment's elements jump to (with repeats).
	shared []sharedChain
	// frontends are the external dispatch keys the fragment holds (external IP . protocol
	// . port, and NodePorts): no two Services may hold one.
	frontends []string
	// HairpinIPs are local endpoint IPs; masquerading a connection from one of them to
	// itself is what lets a pod reach itself through its Service.
	HairpinIPs []string
	// UDPPorts records UDP Service ports and their endpoints, for conntrack cleanup.
	UDPPorts []UDPServicePort
	// Hints says whether the Service's topology hints steer its traffic on this node (used
	// when any of its ports follows them).
	Hints HintUse

	clusterIP string // the ClusterIP of the fragment's Service

	// slots are the endpoint slot counts of the ClusterIP ports, which a later incremental
	// render keeps when a count falls (see padSlots); padded says some slots hold copies.
	slots  []portSlots
	padded bool
}

// Chain is a chain with its rules in nft syntax (relative to the table).
type Chain struct {
	Name     string
	Type     knftables.BaseChainType
	Hook     knftables.BaseChainHook
	Priority knftables.BaseChainPriority
	Rules    []string
}

// IsBase tells whether the chain is attached to a netfilter hook.
func (c *Chain) IsBase() bool { return c.Hook != "" }

// SetDecl declares a set (Map false) or a map (Map true).
type SetDecl struct {
	Name    string
	Map     bool
	Type    string
	TypeOf  string
	Flags   []knftables.SetFlag
	Timeout time.Duration
}

// Element is one element of a set (Value nil) or map.
type Element struct {
	Set   string
	Key   []string
	Value []string
}

// familyInfo holds the per-family words of the rules.
type familyInfo struct {
	ipFamily    corev1.IPFamily
	nftFamily   knftables.Family
	addressType discoveryv1.AddressType
	ipKeyword   string // "ip" or "ip6" in payload expressions
	addrType    string // nft set type of an address
}

func infoFor(family corev1.IPFamily) familyInfo {
	if family == corev1.IPv6Protocol {
		return familyInfo{corev1.IPv6Protocol, knftables.IPv6Family, discoveryv1.AddressTypeIPv6, "ip6", "ipv6_addr"}
	}
	return familyInfo{corev1.IPv4Protocol, knftables.IPv4Family, discoveryv1.AddressTypeIPv4, "ip", "ipv4_addr"}
}

// NFTFamily is the nftables family that holds the table for an IP family.
func NFTFamily(family corev1.IPFamily) knftables.Family { return infoFor(family).nftFamily }
