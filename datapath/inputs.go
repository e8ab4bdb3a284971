package datapath

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// serviceInput is what the Proxier was last told about one Service.
type serviceInput struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
}

// sameAs tells whether other carries the same object versions (UID and
// resourceVersions). Without resourceVersions nothing is known to be the same.
func (in serviceInput) sameAs(other serviceInput) bool {
	a, b := in.svc, other.svc
	if a == nil || b == nil || a.ResourceVersion == "" || a.UID != b.UID || a.ResourceVersion != b.ResourceVersion ||
		len(in.slices) != len(other.slices) {
		return false
	}
	for _, s := range in.slices {
		if s.ResourceVersion == "" || !hasSliceVersion(other.slices, s) {
			return false
		}
	}
	return true
}

func hasSliceVersion(slices []*discoveryv1.EndpointSlice, want *discoveryv1.EndpointSlice) bool {
	for _, s := range slices {
		if s.Name == want.Name && s.UID == want.UID && s.ResourceVersion == want.ResourceVersion {
			return true
		}
	}
	return false
}

// renderAll renders the family's whole ruleset from the inputs, reusing the committed
// fragment of every Service that was not updated since and has no padded slots.
func (p *Proxier) renderAll(fs *familyState) *Ruleset {
	services := make([]*corev1.Service, 0, len(p.inputs))
	for _, in := range p.inputs {
		services = append(services, in.svc)
	}
	want := &Ruleset{Family: fs.family, Services: map[types.NamespacedName]*Fragment{}}
	unique := UniqueClusterIPServices(services, fs.family)
	// Fragments kept from the last commit hold their external frontends first (they held
	// them together without conflict); the re-rendered Services claim what is left.
	frontends := map[string]bool{}
	var render []types.NamespacedName
	for _, key := range sortedNames(unique) {
		if prev := fs.committedFragment(key); prev != nil && !p.dirty[key] && !prev.padded && prev.clusterIP == ClusterIPOf(unique[key], fs.family) {
			want.Services[key] = claimFrontends(prev, frontends)
			continue
		}
		render = append(render, key)
	}
	renderServices(p.cfg, fs.family, render, unique, func(key types.NamespacedName) []*discoveryv1.EndpointSlice {
		return p.inputs[key].slices
	}, nil, frontends, want.Services)
	want.refs = countRefs(want.Services)
	want.Base = renderBase(p.cfg, fs.family, want.refs)
	return want
}

func (fs *familyState) committedFragment(key types.NamespacedName) *Fragment {
	if fs.committed == nil {
		return nil
	}
	return fs.committed.Services[key]
}

// renderChanges renders the updated Services into the committed ruleset and returns
// what the incremental sync needs: before, the part of the committed ruleset the change
// touches (the base, the old fragments of the changed Services and the use counts of
// their hairpin IPs); want, the new ruleset; and the Services whose fragment changed.
// A ClusterIP already held by another Service stays with it until the next full sync.
//
// The committed ruleset becomes want in place: copying its maps would make every
// change cost O(Services). That is safe because a sync that fails forgets the
// committed ruleset (see syncFamily).
func (p *Proxier) renderChanges(fs *familyState) (before, want *Ruleset, changed []types.NamespacedName) {
	want = fs.committed
	before = &Ruleset{Family: fs.family, Base: want.Base, Services: map[types.NamespacedName]*Fragment{},
		refs: fragmentRefs{hairpin: map[string]int{}}}
	now := p.cfg.Clock.Now()
	for key := range p.dirty {
		old := want.Services[key]
		var next *Fragment
		if in, ok := p.inputs[key]; ok {
			if ip := ClusterIPOf(in.svc, fs.family); ip != "" {
				if owner, taken := want.refs.owners[ip]; !taken || owner == key || (old != nil && old.clusterIP == ip) {
					next = renderService(p.cfg, fs.family, in.svc, in.slices, func(frontend string) bool {
						owner, held := want.refs.frontendOwners[frontend]
						return held && owner != key
					}, p.slotsToKeep(key, old))
				}
			}
		}
		fs.notePadding(key, next, now)
		if old == nil && next == nil {
			continue
		}
		changed = append(changed, key)
		if old != nil {
			before.Services[key] = old
		}
		for _, f := range []*Fragment{old, next} {
			keepHairpinCounts(before.refs.hairpin, want.refs.hairpin, f)
		}
		want.refs.remove(key, old)
		want.refs.add(key, next)
		if next == nil {
			delete(want.Services, key)
		} else {
			want.Services[key] = next
		}
	}
	want.Base = renderBase(p.cfg, fs.family, want.refs)
	return before, want, changed
}

// slotsToKeep are the slot counts a new render of the Service keeps (see padSlots): those
// of its committed fragment, unless Maintain rebalances it now.
func (p *Proxier) slotsToKeep(key types.NamespacedName, old *Fragment) []portSlots {
	if old == nil || p.rebalance[key] {
		return nil
	}
	return old.slots
}

// notePadding records since when the Service's fragment has been padded: from its first
// padded render, so that a Service losing endpoints one after another is still moved to
// its own count paddingHold after the first loss.
func (fs *familyState) notePadding(key types.NamespacedName, next *Fragment, now time.Time) {
	if next == nil || !next.padded {
		delete(fs.padded, key)
		return
	}
	if _, ok := fs.padded[key]; !ok {
		fs.padded[key] = now
	}
}

// keepHairpinCounts copies into kept the current use counts of f's hairpin IPs, unless
// kept has them already (from before an earlier change of this sync).
func keepHairpinCounts(kept, current map[string]int, f *Fragment) {
	if f == nil {
		return
	}
	for _, ip := range f.HairpinIPs {
		if _, ok := kept[ip]; !ok {
			kept[ip] = current[ip]
		}
	}
}

// fragmentRefs counts what the base renders from the Services: which dnat-mod-N chains
// and hairpin pairs are in use, and which Service holds each ClusterIP.
type fragmentRefs struct {
	shared  map[sharedChain]int
	hairpin map[string]int
	owners  map[string]types.NamespacedName
	// frontendOwners holds the Service of each external dispatch key (Fragment.frontends).
	frontendOwners map[string]types.NamespacedName
	hints          map[HintUse]int // Services by what they make of their topology hints
}

func countRefs(services map[types.NamespacedName]*Fragment) fragmentRefs {
	r := fragmentRefs{shared: map[sharedChain]int{}, hairpin: map[string]int{}, owners: make(map[string]types.NamespacedName, len(services)),
		frontendOwners: map[string]types.NamespacedName{}, hints: map[HintUse]int{}}
	for key, f := range services {
		r.add(key, f)
	}
	return r
}

func (r fragmentRefs) add(key types.NamespacedName, f *Fragment) {
	if f == nil {
		return
	}
	r.owners[f.clusterIP] = key
	r.hints[f.Hints]++
	for _, c := range f.shared {
		r.shared[c]++
	}
	for _, k := range f.frontends {
		r.frontendOwners[k] = key
	}
	for _, ip := range f.HairpinIPs {
		r.hairpin[ip]++
	}
}

func (r fragmentRefs) remove(key types.NamespacedName, f *Fragment) {
	if f == nil {
		return
	}
	if r.owners[f.clusterIP] == key {
		delete(r.owners, f.clusterIP)
	}
	if r.hints[f.Hints]--; r.hints[f.Hints] <= 0 {
		delete(r.hints, f.Hints)
	}
	// A shared chain no Service uses any more stays (count 0) until the next full sync: the
	// kernel keeps it anyway (see removeStale), and a Service whose endpoint count flips back
	// then changes map elements only, a netlink batch instead of an nft run.
	for _, c := range f.shared {
		r.shared[c]--
	}
	for _, k := range f.frontends {
		if r.frontendOwners[k] == key {
			delete(r.frontendOwners, k)
		}
	}
	for _, ip := range f.HairpinIPs {
		if r.hairpin[ip]--; r.hairpin[ip] <= 0 {
			delete(r.hairpin, ip)
		}
	}
}

// unionKeys lists the Services present in either ruleset.
func unionKeys(a, b *Ruleset) []types.NamespacedName {
	seen := map[types.NamespacedName]bool{}
	var out []types.NamespacedName
	for _, rs := range []*Ruleset{a, b} {
		if rs == nil {
			continue
		}
		for key := range rs.Services {
			if !seen[key] {
				seen[key] = true
				out = append(out, key)
			}
		}
	}
	return out
}
