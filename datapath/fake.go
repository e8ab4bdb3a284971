package datapath

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/datapath/nfttrace"
)

// Fake is a Proxier that writes to knftables Fakes (one per family) instead of the
// kernel and records the conntrack deletions it asks for, so that callers can see what
// the datapath would program, and test it, without root. Transactions and conntrack
// deletions can be made to fail as a broken nft or netlink would.
type Fake struct {
	*Proxier
	// Conntrack records the stale UDP flows the Proxier asked to delete.
	Conntrack *ConntrackRecorder

	tables map[corev1.IPFamily]*failingNFT
	cfg    Config
}

// NewFake returns a Proxier for cfg over knftables Fakes. cfg's NewInterface and
// Conntrack are replaced; its CanaryPresent, when nil, reads the Fake's canary chain, so
// a table flushed through Table(family) is restored like a flushed kernel table.
func NewFake(cfg Config) (*Fake, error) {
	cfg = cfg.withDefaults()
	f := &Fake{Conntrack: &ConntrackRecorder{}, tables: map[corev1.IPFamily]*failingNFT{}}
	for _, family := range cfg.IPFamilies {
		f.tables[family] = &failingNFT{Fake: knftables.NewFake(NFTFamily(family), cfg.TableName)}
	}
	cfg.NewInterface = func(family knftables.Family, _ string) (knftables.Interface, error) {
		for ipFamily, nft := range f.tables {
			if NFTFamily(ipFamily) == family {
				return nft, nil
			}
		}
		return nil, fmt.Errorf("no fake table for family %s", family)
	}
	if cfg.CanaryPresent == nil {
		cfg.CanaryPresent = func(_ context.Context, family knftables.Family, _ string) (bool, error) {
			for ipFamily, nft := range f.tables {
				if NFTFamily(ipFamily) == family {
					return nft.canaryPresent(), nil
				}
			}
			return false, nil
		}
	}
	cfg.Conntrack = f.Conntrack
	p, err := New(cfg)
	if err != nil {
		return nil, err
	}
	f.Proxier, f.cfg = p, cfg
	return f, nil
}

// Table returns the knftables Fake holding the family's table (nil for a family the
// Proxier does not program). Writing to it directly plays an outside change.
func (f *Fake) Table(family corev1.IPFamily) *knftables.Fake {
	if nft := f.tables[family]; nft != nil {
		return nft.Fake
	}
	return nil
}

// Tracer returns a packet tracer over the family's table, for a node with the given
// addresses (connections from them start in the output hook). Affinity timeouts follow
// the Config's Clock.
func (f *Fake) Tracer(family corev1.IPFamily, nodeAddresses ...string) *nfttrace.Tracer {
	return nfttrace.New(f.Table(family), nodeAddresses, f.cfg.Clock)
}

// FailTransactions makes every nft transaction fail with err from now on (nil: succeed
// again), leaving the tables as they are, as an atomic nft transaction does.
func (f *Fake) FailTransactions(err error) {
	for _, nft := range f.tables {
		nft.setFailure(err)
	}
}

// failingNFT is a knftables Fake whose transactions fail while failure is set.
type failingNFT struct {
	*knftables.Fake
	mu      sync.Mutex
	failure error
}

func (n *failingNFT) setFailure(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failure = err
}

// Run applies tx to the Fake, or returns the injected failure.
func (n *failingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	n.mu.Lock()
	failure := n.failure
	n.mu.Unlock()
	if failure != nil {
		return failure
	}
	return n.Fake.Run(ctx, tx)
}

func (n *failingNFT) canaryPresent() bool {
	n.RLock()
	defer n.RUnlock()
	return n.Table != nil && n.Table.Chains[canaryChain] != nil && len(n.Table.Chains[canaryChain].Rules) > 0
}

// ConntrackRecorder is a ConntrackCleaner over a conntrack table of UDP flows (AddFlows
// puts them there): it deletes and records the stale ones, or fails with an injected
// error. It is safe for concurrent use.
type ConntrackRecorder struct {
	mu             sync.Mutex
	flows, deleted []UDPFlow
	failure        error
}

// AddFlows puts flows in the table.
func (r *ConntrackRecorder) AddFlows(flows ...UDPFlow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flows = append(r.flows, flows...)
}

// DeleteStaleUDPFlows implements ConntrackCleaner.
func (r *ConntrackRecorder) DeleteStaleUDPFlows(_ corev1.IPFamily, frontends UDPFrontends) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != nil {
		return 0, r.failure
	}
	kept := r.flows[:0]
	n := 0
	for _, f := range r.flows {
		if frontends.StaleFlow(f) {
			r.deleted = append(r.deleted, f)
			n++
		} else {
			kept = append(kept, f)
		}
	}
	r.flows = kept
	return n, nil
}

// Deleted returns the flows deleted so far, in order.
func (r *ConntrackRecorder) Deleted() []UDPFlow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]UDPFlow(nil), r.deleted...)
}

// Fail makes every deletion fail with err from now on (nil: succeed again).
func (r *ConntrackRecorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failure = err
}
