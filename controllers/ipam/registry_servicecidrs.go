package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// How the cluster's ServiceCIDRs shape the pools: kube-apiserver assigns an address only from a
// Ready ServiceCIDR, so the Registry grows the pool "default" by the ServiceCIDRs no pool
// covers, hands out a pool CIDR spanning several ServiceCIDRs from each of them, and says why a
// range it cannot use is refused.

// ServiceCIDR is a networking.k8s.io/v1 ServiceCIDR as the registry needs it.
type ServiceCIDR struct {
	Name  string
	CIDRs []netip.Prefix
	// Ready is false while the object is being deleted or says Ready=False: the API server then
	// assigns no new address from it.
	Ready bool
}

// SetServiceCIDRs replaces the cluster's ServiceCIDRs and rebuilds the bitmaps: the pool
// "default" grows by the CIDRs no pool covers, and no range hands out addresses the API server
// would refuse.
func (r *Registry) SetServiceCIDRs(cidrs []ServiceCIDR) {
	cidrs = slices.Clone(cidrs)
	slices.SortFunc(cidrs, func(a, b ServiceCIDR) int { return strings.Compare(a.Name, b.Name) })
	r.mu.Lock()
	if r.serviceCIDRsKnown && slices.EqualFunc(r.serviceCIDRs, cidrs, func(a, b ServiceCIDR) bool {
		return a.Name == b.Name && a.Ready == b.Ready && slices.Equal(a.CIDRs, b.CIDRs)
	}) {
		r.mu.Unlock()
		return
	}
	r.serviceCIDRs, r.serviceCIDRsKnown = cidrs, true
	names := r.rebuildLocked()
	r.mu.Unlock()
	r.notify(names)
}

// extendDefaultLocked adds to the pool "default" the CIDRs of the cluster's ServiceCIDRs that
// overlap no pool's CIDR, so that a ServiceCIDR an admin adds extends it at once. A ServiceCIDR
// that overlaps a pool adds nothing: the pools' specs say who owns those addresses (a default
// pool shrunk on purpose stays shrunk; a tenant pool keeps its own and its reserved addresses).
// The CIDRs of a ServiceCIDR being deleted stay while it exists, so the Services still holding
// its addresses count in the pool.
func (r *Registry) extendDefaultLocked() {
	def, ok := r.pools[ipamv1alpha1.DefaultPoolName]
	if !ok || def.invalid != "" {
		return
	}
	for _, sc := range r.serviceCIDRs {
		for _, c := range sc.CIDRs {
			if r.overlapsLocked(c) {
				continue
			}
			rg, err := allocator.NewRange(c, def.rangeOptions()...)
			if err != nil {
				continue // an IPv6 ServiceCIDR wider than /64: not supported by the bitmaps; the pool's status shows what it has
			}
			def.ranges = append(def.ranges, rg)
		}
	}
}

// uncoveredCIDR is a spec CIDR of a pool that no ServiceCIDR contains, with the ServiceCIDRs
// inside it that the pool hands out from instead.
type uncoveredCIDR struct {
	cidr   netip.Prefix
	within []netip.Prefix
}

func (u uncoveredCIDR) why() string {
	parts := make([]string, len(u.within))
	for i, w := range u.within {
		parts[i] = w.String()
	}
	return fmt.Sprintf("%s lies in no single ServiceCIDR: only its addresses in the ServiceCIDRs %s are handed out, "+
		"without the network and broadcast address of each; the API server refuses the others",
		u.cidr, strings.Join(parts, ", "))
}

// splitAcrossServiceCIDRsLocked replaces each range that no ServiceCIDR contains, but that holds
// Ready ServiceCIDRs, by ranges of those ServiceCIDRs. kube-apiserver takes an address when some
// Ready ServiceCIDR has it other than as its network or broadcast address, so a pool spanning
// adjacent ServiceCIDRs hands out from each of them (a range leaves out its own network and
// broadcast address), and a pool only partly inside them from that part. A ServiceCIDR that also
// lies in a narrower pool CIDR is that pool's.
func (r *Registry) splitAcrossServiceCIDRsLocked() {
	for _, p := range r.pools {
		p.uncovered = nil
		if p.invalid != "" || !r.serviceCIDRsKnown {
			continue
		}
		var ranges []*allocator.Range
		for _, rg := range p.ranges {
			var subs []*allocator.Range
			var within []netip.Prefix
			for _, w := range r.serviceCIDRsWithinLocked(rg.CIDR()) {
				if sub, err := allocator.NewRange(w, p.rangeOptions()...); err == nil {
					subs, within = append(subs, sub), append(within, w)
				}
			}
			if len(subs) == 0 {
				ranges = append(ranges, rg) // outside every ServiceCIDR, or inside one: as it is
				continue
			}
			ranges = append(ranges, subs...)
			p.uncovered = append(p.uncovered, uncoveredCIDR{cidr: rg.CIDR(), within: within})
		}
		p.ranges = ranges
	}
}

// serviceCIDRsWithinLocked returns the Ready ServiceCIDRs nested in c, widest first where they
// nest, when no ServiceCIDR contains c; ones inside a narrower pool CIDR are left to that pool.
func (r *Registry) serviceCIDRsWithinLocked(c netip.Prefix) []netip.Prefix {
	var within []netip.Prefix
	for _, sc := range r.serviceCIDRs {
		for _, sp := range sc.CIDRs {
			switch {
			case sp.Bits() <= c.Bits() && sp.Contains(c.Addr()):
				return nil // c is inside a ServiceCIDR (Ready or draining): one range
			case sc.Ready && sp.Bits() > c.Bits() && c.Contains(sp.Addr()) && !r.inNarrowerPoolLocked(sp, c):
				within = append(within, sp)
			}
		}
	}
	slices.SortFunc(within, func(a, b netip.Prefix) int {
		if n := a.Addr().Compare(b.Addr()); n != 0 {
			return n
		}
		return a.Bits() - b.Bits()
	})
	// Sorted by address, then widest first: a prefix nested in one kept before it is covered.
	var out []netip.Prefix
	for _, sp := range within {
		if len(out) == 0 || !out[len(out)-1].Contains(sp.Addr()) {
			out = append(out, sp)
		}
	}
	return out
}

// inNarrowerPoolLocked says whether a valid pool has a CIDR inside c that contains sp.
func (r *Registry) inNarrowerPoolLocked(sp, c netip.Prefix) bool {
	for _, p := range r.pools {
		if p.invalid != "" {
			continue
		}
		for _, s := range p.spec.CIDRs {
			q, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			q = q.Masked()
			if q.Bits() > c.Bits() && c.Contains(q.Addr()) && q.Bits() <= sp.Bits() && q.Contains(sp.Addr()) {
				return true
			}
		}
	}
	return false
}

// uncoveredLocked returns the pool with a spec CIDR holding ip outside the ServiceCIDRs it hands
// out from, and why the API server refuses ip.
func (r *Registry) uncoveredLocked(ip netip.Addr) (*pool, string) {
	for _, p := range r.pools {
		for _, u := range p.uncovered {
			if u.cidr.Contains(ip) {
				return p, u.why()
			}
		}
	}
	return nil, ""
}

// overlapsLocked says whether c overlaps a range of some pool, or a CIDR of a pool spanning
// ServiceCIDRs.
func (r *Registry) overlapsLocked(c netip.Prefix) bool {
	for _, p := range r.pools {
		for _, rg := range p.ranges {
			if rg.CIDR().Overlaps(c) {
				return true
			}
		}
		for _, u := range p.uncovered {
			if u.cidr.Overlaps(c) {
				return true
			}
		}
	}
	return false
}

// unusableLocked says why the API server refuses the addresses of c, or "" when it accepts them:
// a Ready ServiceCIDR that is not being deleted must contain c. Without ServiceCIDRs in the API
// (before v1.33) nothing is known, and every range is used.
func (r *Registry) unusableLocked(c netip.Prefix) string {
	if !r.serviceCIDRsKnown {
		return ""
	}
	var all, draining []string
	for _, sc := range r.serviceCIDRs {
		for _, sp := range sc.CIDRs {
			all = append(all, sp.String())
			if sp.Bits() > c.Bits() || !sp.Contains(c.Addr()) {
				continue
			}
			if sc.Ready {
				return ""
			}
			draining = append(draining, sc.Name)
		}
	}
	if len(draining) > 0 {
		return fmt.Sprintf("%s lies only in ServiceCIDR %s, which is being deleted or not Ready: the API server assigns no new address from it",
			c, strings.Join(draining, ", "))
	}
	if len(all) == 0 {
		return fmt.Sprintf("%s lies outside every ServiceCIDR: the cluster has none", c)
	}
	return fmt.Sprintf("%s lies outside every ServiceCIDR of the cluster (%s): the API server refuses its addresses; "+
		"add a ServiceCIDR that contains it, or change the pool's spec.cidrs", c, strings.Join(all, ", "))
}
