package datapath

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/proxysync"
)

// DefaultTableName is the name of the table the Proxier owns in each family.
const DefaultTableName = "kube-clusterip"

// Defaults for Config fields left zero.
const (
	DefaultMasqueradeBit     = 14
	DefaultFullSyncPeriod    = time.Hour
	DefaultCanaryCheckPeriod = time.Second
	// DefaultAffinityTimeout is the ClientIP affinity timeout when the Service names none
	// (the Kubernetes API default, 3 hours).
	DefaultAffinityTimeout = 10800 * time.Second
)

// Config describes the node and the policy the datapath implements. The zero value
// of every optional field picks the documented default.
type Config struct {
	// NodeName is this node's name; it selects local endpoints for
	// internalTrafficPolicy: Local and for hairpin masquerading.
	NodeName string
	// Zone is this node's zone (its label topology.kubernetes.io/zone): endpoints hinted
	// for it are preferred. Proxier.SetZone changes it at run time.
	Zone string
	// IPFamilies lists the families to program (one table each). Default: IPv4 and IPv6.
	IPFamilies []corev1.IPFamily
	// ClusterCIDRs are the pod CIDRs of the cluster (any family). Traffic to a ClusterIP
	// from a source outside them is masqueraded. Empty means only hairpin and node
	// traffic is masqueraded (unless MasqueradeAll).
	ClusterCIDRs []string
	// ServiceCIDRs are the ranges ClusterIPs come from (any family). Packets to an
	// address in them that no Service holds are dropped. Empty disables that check.
	ServiceCIDRs []string
	// NodePortAddresses are the node's addresses that accept NodePort traffic (any family;
	// ResolveNodePortAddresses turns kube-proxy's --nodeport-addresses into them). Empty:
	// every local address but loopback.
	NodePortAddresses []string
	// NodeIPs are the node's primary addresses. A load balancer's loadBalancerSourceRanges
	// that contain one also admit the load balancer's own IPs as sources (a node reaching a
	// VIP that is routed locally comes from the VIP itself), as kube-proxy does.
	NodeIPs []string
	// MasqueradeAll masquerades every connection to a ClusterIP.
	MasqueradeAll bool
	// MasqueradeBit is the packet mark bit (1-31) that asks for masquerading; 0 picks
	// the default, 14 (kube-proxy's 0x4000).
	MasqueradeBit int
	// TableName is the table name used in each family. Default DefaultTableName.
	TableName string

	// FullSyncPeriod is how often Run rewrites the whole table. Default 1h.
	FullSyncPeriod time.Duration
	// CanaryCheckPeriod is how often Run checks that the table was not flushed or
	// deleted from outside. Default 1s.
	CanaryCheckPeriod time.Duration

	// OnSync, when set, is called after every sync attempt of every family (for metrics).
	OnSync func(SyncResult)

	// NewInterface builds the knftables interface for one family; tests pass a Fake.
	// Default: knftables.New(family, table, knftables.UseNetlink).
	NewInterface func(family knftables.Family, table string) (knftables.Interface, error)
	// CanaryPresent reports whether the table's canary rule is still there. Default:
	// a netlink dump of the canary chain (never `nft list`, which would read the whole
	// table). Returning false or an error forces a full resync.
	CanaryPresent func(ctx context.Context, family knftables.Family, table string) (bool, error)
	// Conntrack deletes UDP conntrack entries. Default: netlink (NetlinkConntrack).
	Conntrack ConntrackCleaner
	// Clock tells the time of syncs, periods and holds, and ticks for Run; tests pass a
	// fake one. Default: the real clock.
	Clock clock.WithTicker
}

func (c Config) node() Node { return Node{Name: c.NodeName, Zone: c.Zone} }

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if len(c.IPFamilies) == 0 {
		c.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	if c.MasqueradeBit == 0 {
		c.MasqueradeBit = DefaultMasqueradeBit
	}
	if c.TableName == "" {
		c.TableName = DefaultTableName
	}
	if c.FullSyncPeriod == 0 {
		c.FullSyncPeriod = DefaultFullSyncPeriod
	}
	if c.CanaryCheckPeriod == 0 {
		c.CanaryCheckPeriod = DefaultCanaryCheckPeriod
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return c
}

// SyncResult describes one sync attempt of one family's table (proxysync.Result, so that the
// node agent reads it without importing this package).
type SyncResult = proxysync.Result
