package ipam

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// maxCarve is the largest nested pool (in addresses) whose CIDR is reserved, address by address,
// in the pool around it. A larger nested pool is skipped lazily by allocateNext instead.
const maxCarve = 1 << 16

// maxShadowSkips bounds how many addresses of large nested pools one allocation skips.
const maxShadowSkips = 4096

// Reasons of allocation errors and findings, used in messages, Events and metrics.
const (
	ReasonFull       = "RangeFull"
	ReasonAllocated  = "ClusterIPAllocated"
	ReasonReserved   = "ClusterIPReserved"
	ReasonOutOfRange = "ClusterIPOutOfRange"
	ReasonDuplicate  = "ClusterIPDuplicate"
	ReasonFamily     = "IPFamilyUnavailable"
	ReasonNoPool     = "NoPool"
	ReasonOtherPool  = "ClusterIPInOtherPool"
	// ReasonOutsideServiceCIDRs: the API server would refuse the address (no Ready ServiceCIDR
	// that is not being deleted contains it).
	ReasonOutsideServiceCIDRs = "OutsideServiceCIDRs"
)

// AdmissionError is why a Service cannot have the ClusterIPs it asks for. Reason is one of the
// Reason constants, Pool the pool concerned (may be empty).
type AdmissionError struct {
	Reason string
	Pool   string
	Err    error
	// Held is the requested address refused because a Service or an IPAddress object holds it
	// as far as the caches know; a live read of its IPAddress can show that the hold is over.
	Held netip.Addr
	// Contested is the requested address refused because it is being assigned to another
	// Service (a reservation or a claim); the claim in the API server says whether it still is.
	Contested netip.Addr
	// IP is the requested address refused, if the refusal is about one.
	IP netip.Addr
}

func (e *AdmissionError) Error() string { return e.Err.Error() }
func (e *AdmissionError) Unwrap() error { return e.Err }

// Finding is something about a Service's ClusterIPs a user should be told about (a Warning Event).
type Finding struct {
	Reason  string
	Pool    string
	Message string
}

// reservation is an address the webhook handed out for a Service that has not been seen yet.
type reservation struct {
	// service may have an empty name: a Service created with generateName has none at admission.
	service  types.NamespacedName
	deadline time.Time
	checked  bool // came from the stash: claimed, and its IPAddress read live, already
	// validated: our validating webhook has seen the Service with this address, so
	// kube-apiserver had created its IPAddress by then (it allocates before it validates). From
	// then on, an IPAddress missing from a live read means the create is over: the Service is
	// gone or was never stored, and the address is free, whatever the reservation's age.
	validated bool
}

func (r reservation) isFor(key types.NamespacedName) bool {
	return r.service == key || (r.service.Name == "" && r.service.Namespace == key.Namespace)
}

// observed is the last state of a Service the repair loop saw.
type observed struct {
	ips             []netip.Addr
	namespaceLabels labels.Set
}

// pool is one ClusterIPPool in memory.
type pool struct {
	name         string
	generation   int64
	spec         ipamv1alpha1.ClusterIPPoolSpec
	selector     labels.Selector
	requirements int
	ranges       []*allocator.Range
	carved       []uint64 // per range: addresses reserved for nested pools
	shadowed     []uint64 // per range: addresses of large nested pools marked lazily
	held         []uint64 // per range: addresses a Service holds
	unusable     []string // per range: why the API server refuses its addresses; "" when it accepts them
	// uncovered are the spec CIDRs that lie in no single ServiceCIDR but hold some: the pool
	// hands out from those ServiceCIDRs only (see splitAcrossServiceCIDRsLocked).
	uncovered   []uncoveredCIDR
	selectorErr string // why spec.namespaceSelector does not parse
	invalid     string // why the pool hands out nothing; empty when Ready
	overlaps    bool   // invalid because another pool has the same CIDR
}

// families returns the families of the pool's ranges, in the order of spec.cidrs.
func (p *pool) families() []allocator.Family {
	fs := make([]allocator.Family, 0, len(p.ranges))
	for _, r := range p.ranges {
		if !slices.Contains(fs, r.Family()) {
			fs = append(fs, r.Family())
		}
	}
	return fs
}

// rangeFor returns the range of family f that hands out the next address: the first one the API
// server accepts addresses from that has a free address.
func (p *pool) rangeFor(f allocator.Family) (int, *allocator.Range, error) {
	first, why := -1, ""
	for i, rg := range p.ranges {
		if rg.Family() != f {
			continue
		}
		if p.unusable[i] != "" {
			why = p.unusable[i]
			continue
		}
		if rg.Free() > 0 {
			return i, rg, nil
		}
		if first < 0 {
			first = i
		}
	}
	if first >= 0 {
		return -1, nil, fullError(p, p.ranges[first])
	}
	return -1, nil, &AdmissionError{Reason: ReasonOutsideServiceCIDRs, Pool: p.name, Err: fmt.Errorf(
		"%w: pool %s has no %s address the API server accepts: %s", allocator.ErrNotInRange, p.name, f, why)}
}

// indexOf returns the index of rg in the pool's ranges.
func (p *pool) indexOf(rg *allocator.Range) int { return slices.Index(p.ranges, rg) }

// usableCIDRs lists the CIDRs the pool hands out addresses from.
func (p *pool) usableCIDRs() string {
	var s []string
	for i, r := range p.ranges {
		if p.unusable[i] == "" {
			s = append(s, r.CIDR().String())
		}
	}
	return strings.Join(s, ", ")
}

func (p *pool) cidrs() string {
	var s []string
	for _, r := range p.ranges {
		s = append(s, r.CIDR().String())
	}
	return strings.Join(s, ", ")
}

// Registry holds every pool's bitmaps and who holds which address. It is the pure core of
// assignment: the webhooks ask it for addresses, the repair loop tells it what Services hold and
// which IPAddress objects the API server has. Every address lives in exactly one pool, its owner:
// the pool with the narrowest CIDR containing it, so a tenant pool nested in the default pool is
// carved out of it. An address is handed out only while nothing holds it: no Service, no
// reservation of the webhook, and no IPAddress object, whatever that object names as its parent
// (kube-apiserver refuses a second IPAddress for an address, and its own repair loop re-creates
// one for a Service its cache still shows after the Service is gone). Safe for concurrent use.
type Registry struct {
	mu       sync.Mutex
	now      func() time.Time
	grace    time.Duration
	pools    map[string]*pool
	services map[types.NamespacedName]observed
	holders  map[netip.Addr]types.NamespacedName
	extra    map[netip.Addr][]types.NamespacedName // Services holding an address after its first holder
	outside  map[netip.Addr][]types.NamespacedName // Services holding an address no pool owns
	pending  map[netip.Addr]reservation
	claims   map[netip.Addr]claim // addresses claimed through the API server (see claims.go)
	// stash holds addresses set aside for the next admissions (see stash.go); stashReady the
	// ready ones per pool and family, oldest first; stashSize how many each should hold.
	stash      map[netip.Addr]stashEntry
	stashReady map[stashKey][]netip.Addr
	stashSize  map[stashKey]int
	stashMax   int
	stashTaken func()
	// ipAddresses are the addresses the API server has an IPAddress object for, with the Service
	// the object names (zero when it names none).
	ipAddresses map[netip.Addr]types.NamespacedName
	// evicted are Services our caches still showed holding an address after kube-apiserver had
	// deleted its IPAddress (see ForgetStaleHold), until their deletion is seen.
	evicted map[netip.Addr]map[types.NamespacedName]bool
	// ipAddressUIDs identify the objects of ipAddresses; goneIPAddresses are objects a live read
	// found gone before the watch said so (see ForgetStaleHold).
	ipAddressUIDs, goneIPAddresses map[netip.Addr]types.UID
	// serviceCIDRs are the cluster's ServiceCIDRs, by name; serviceCIDRsKnown is false until
	// SetServiceCIDRs (or for ever, on an API server without them).
	serviceCIDRs      []ServiceCIDR
	serviceCIDRsKnown bool
	changed           func(pool string)
	ready             chan struct{}
	once              sync.Once
}

// NewRegistry returns an empty Registry. grace is how long a webhook reservation waits for its
// Service; changed (may be nil) is called, without the lock, with the name of each pool whose
// counts or conditions may have changed.
func NewRegistry(grace time.Duration, now func() time.Time, changed func(pool string)) *Registry {
	if now == nil {
		now = time.Now
	}
	if changed == nil {
		changed = func(string) {}
	}
	return &Registry{
		now: now, grace: grace, changed: changed,
		pools:    map[string]*pool{},
		services: map[types.NamespacedName]observed{},
		holders:  map[netip.Addr]types.NamespacedName{},
		extra:    map[netip.Addr][]types.NamespacedName{},
		outside:  map[netip.Addr][]types.NamespacedName{},
		pending:  map[netip.Addr]reservation{},
		claims:   map[netip.Addr]claim{},
		ready:    make(chan struct{}),

		stash:      map[netip.Addr]stashEntry{},
		stashReady: map[stashKey][]netip.Addr{},
		stashSize:  map[stashKey]int{},
		stashTaken: func() {},

		ipAddresses: map[netip.Addr]types.NamespacedName{},
		evicted:     map[netip.Addr]map[types.NamespacedName]bool{},

		ipAddressUIDs:   map[netip.Addr]types.UID{},
		goneIPAddresses: map[netip.Addr]types.UID{},
	}
}

// MarkReady records that the Registry mirrors the cluster; the webhooks answer from then on.
func (r *Registry) MarkReady() { r.once.Do(func() { close(r.ready) }) }

// Ready is closed once MarkReady was called.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// SetPools replaces all pools at once (the initial rebuild) and rebuilds the bitmaps.
func (r *Registry) SetPools(pools []ipamv1alpha1.ClusterIPPool) {
	r.mu.Lock()
	r.pools = map[string]*pool{}
	for i := range pools {
		r.pools[pools[i].Name] = newPool(&pools[i])
	}
	names := r.rebuildLocked()
	r.mu.Unlock()
	r.notify(names)
}

// SetPool adds or updates a pool; when its spec changed every bitmap is rebuilt from the holders.
func (r *Registry) SetPool(p *ipamv1alpha1.ClusterIPPool) {
	r.mu.Lock()
	if old, ok := r.pools[p.Name]; ok && old.generation == p.Generation && p.Generation != 0 {
		r.mu.Unlock()
		return
	}
	r.pools[p.Name] = newPool(p)
	names := r.rebuildLocked()
	r.mu.Unlock()
	r.notify(names)
}

// DeletePool removes a pool; its addresses fall to the pools around it, or outside every pool.
func (r *Registry) DeletePool(name string) {
	r.mu.Lock()
	if _, ok := r.pools[name]; !ok {
		r.mu.Unlock()
		return
	}
	delete(r.pools, name)
	names := r.rebuildLocked()
	r.mu.Unlock()
	r.notify(names)
}

// PoolNames returns the names of the pools, sorted.
func (r *Registry) PoolNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.pools))
}

func (r *Registry) notify(names []string) {
	for _, n := range names {
		r.changed(n)
	}
}

func newPool(obj *ipamv1alpha1.ClusterIPPool) *pool {
	p := &pool{name: obj.Name, generation: obj.Generation, spec: *obj.Spec.DeepCopy()}
	if sel := obj.Spec.NamespaceSelector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			p.selectorErr = fmt.Sprintf("spec.namespaceSelector: %v", err)
			return p
		}
		p.selector = s
		p.requirements = len(sel.MatchLabels) + len(sel.MatchExpressions)
	}
	return p
}

// rebuildLocked creates every pool's ranges anew (reserved addresses, nested pools carved out)
// and replays the Services and reservations into them. It returns the names of all pools.
func (r *Registry) rebuildLocked() []string {
	r.dropStashLocked()
	names := slices.Sorted(maps.Keys(r.pools))
	seen := map[netip.Prefix]string{}
	for _, name := range names {
		p := r.pools[name]
		p.invalid, p.overlaps, p.ranges, p.carved, p.shadowed = p.selectorErr, false, nil, nil, nil
		if p.invalid != "" {
			continue
		}
		opts := p.rangeOptions()
		for _, c := range p.spec.CIDRs {
			prefix, err := netip.ParsePrefix(c)
			if err != nil {
				p.invalid = fmt.Sprintf("spec.cidrs: %q is not a CIDR", c)
				break
			}
			prefix = prefix.Masked()
			if other, dup := seen[prefix]; dup {
				p.invalid = fmt.Sprintf("CIDR %s is also pool %s's; give each pool its own CIDR", prefix, other)
				p.overlaps = true
				break
			}
			rg, err := allocator.NewRange(prefix, opts...)
			if err != nil {
				p.invalid = fmt.Sprintf("spec.cidrs: %v", err)
				break
			}
			p.ranges = append(p.ranges, rg)
		}
		if p.invalid != "" {
			p.ranges = nil
			continue
		}
		for _, rg := range p.ranges {
			seen[rg.CIDR()] = p.name
		}
	}
	r.splitAcrossServiceCIDRsLocked()
	r.extendDefaultLocked()
	for _, p := range r.pools {
		for _, s := range p.spec.Reserved {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			for _, rg := range p.ranges {
				if rg.CIDR().Contains(ip) {
					_ = rg.Reserve(ip) // the CEL rules keep reserved addresses inside the CIDRs
				}
			}
		}
		p.carved = make([]uint64, len(p.ranges))
		p.shadowed = make([]uint64, len(p.ranges))
		p.held = make([]uint64, len(p.ranges))
		p.unusable = make([]string, len(p.ranges))
		for i, rg := range p.ranges {
			p.unusable[i] = r.unusableLocked(rg.CIDR())
		}
	}
	r.carveLocked()
	r.replayLocked()
	return names
}

// releasedAddressCooling is how long a released address is handed out only when its pool has no
// other free address. kube-apiserver's repair loop re-creates the IPAddress of a Service its
// cache still shows (for seconds after an API server restart, for a Service deleted a moment
// before), and removes it as leaked about a minute later: an address handed out in between is
// refused ("provided IP is already allocated"), even though we read its IPAddress live first.
const releasedAddressCooling = time.Minute

func (p *pool) rangeOptions() []allocator.Option {
	if q := p.spec.QuarantineSeconds; q != nil && *q > 0 {
		return []allocator.Option{allocator.WithQuarantine(time.Duration(*q) * time.Second)}
	}
	return []allocator.Option{allocator.WithCooling(releasedAddressCooling)}
}

// carveLocked reserves, in each range, the addresses of the smaller ranges nested in it.
func (r *Registry) carveLocked() {
	for _, outer := range r.pools {
		for i, rg := range outer.ranges {
			before := rg.Reserved()
			for _, inner := range r.pools {
				for _, nested := range inner.ranges {
					n := nested.CIDR()
					if n.Bits() <= rg.CIDR().Bits() || !rg.CIDR().Contains(n.Addr()) || prefixSize(n) > maxCarve {
						continue
					}
					for ip := n.Addr(); n.Contains(ip); ip = ip.Next() {
						_ = rg.Reserve(ip) // the network and broadcast address of rg are not in it
					}
				}
			}
			outer.carved[i] = rg.Reserved() - before
		}
	}
}

func prefixSize(p netip.Prefix) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 63 {
		return 1 << 63
	}
	return 1 << host
}

// replayLocked marks the addresses of every known Service, reservation and IPAddress object in
// the new ranges.
func (r *Registry) replayLocked() {
	r.holders = map[netip.Addr]types.NamespacedName{}
	r.extra = map[netip.Addr][]types.NamespacedName{}
	r.outside = map[netip.Addr][]types.NamespacedName{}
	for _, ip := range slices.SortedFunc(maps.Keys(r.pending), netip.Addr.Compare) {
		r.settleLocked(ip)
	}
	for _, ip := range slices.SortedFunc(maps.Keys(r.ipAddresses), netip.Addr.Compare) {
		r.settleLocked(ip)
	}
	for _, ip := range slices.SortedFunc(maps.Keys(r.claims), netip.Addr.Compare) {
		r.settleLocked(ip)
	}
	keys := slices.SortedFunc(maps.Keys(r.services), func(a, b types.NamespacedName) int {
		return strings.Compare(a.String(), b.String())
	})
	for _, key := range keys {
		for _, ip := range r.services[key].ips {
			r.holdLocked(key, ip)
		}
	}
}

// ownerLocked returns the pool and range that own ip: the narrowest CIDR that contains it.
func (r *Registry) ownerLocked(ip netip.Addr) (*pool, *allocator.Range) {
	var (
		best   *pool
		bestRg *allocator.Range
	)
	for _, p := range r.pools {
		for _, rg := range p.ranges {
			if rg.CIDR().Contains(ip) && (bestRg == nil || rg.CIDR().Bits() > bestRg.CIDR().Bits()) {
				best, bestRg = p, rg
			}
		}
	}
	return best, bestRg
}

// candidatesLocked returns the pools a namespace may use, most specific first.
func (r *Registry) candidatesLocked(nsLabels labels.Set) []*pool {
	var cands []PoolCandidate
	for _, p := range r.pools {
		if p.invalid == "" && len(p.ranges) > 0 {
			cands = append(cands, PoolCandidate{Name: p.name, Selector: p.selector, Requirements: p.requirements})
		}
	}
	var out []*pool
	for _, c := range ChoosePool(cands, nsLabels) {
		out = append(out, r.pools[c.Name])
	}
	return out
}

func poolList(pools []*pool) string {
	if len(pools) == 0 {
		return "none"
	}
	var s []string
	for _, p := range pools {
		s = append(s, fmt.Sprintf("%s (%s)", p.name, p.cidrs()))
	}
	return strings.Join(s, ", ")
}

// holdLocked records that key holds ip and returns what a user should hear about it.
func (r *Registry) holdLocked(key types.NamespacedName, ip netip.Addr) *Finding {
	if r.evicted[ip][key] {
		return nil // a stale view of a Service the API server has deleted: see ForgetStaleHold
	}
	if _, ok := r.pending[ip]; ok {
		delete(r.pending, ip) // the Service is the truth, whoever the reservation was for
		if _, held := r.holders[ip]; !held {
			r.setHolderLocked(ip, key)
			return nil
		}
	}
	owner, rg := r.ownerLocked(ip)
	if holder, held := r.holders[ip]; held {
		if holder == key || slices.Contains(r.extra[ip], key) {
			return nil
		}
		r.extra[ip] = append(r.extra[ip], key)
		return &Finding{Reason: ReasonDuplicate, Pool: owner.name, Message: fmt.Sprintf(
			"ClusterIP %s in pool %s is also held by Service %s; delete and recreate one of them to give it a new IP",
			ip, owner.name, holder)}
	}
	if rg == nil {
		if !slices.Contains(r.outside[ip], key) {
			r.outside[ip] = append(r.outside[ip], key)
		}
		return &Finding{Reason: ReasonOutOfRange, Message: fmt.Sprintf(
			"ClusterIP %s is outside every ClusterIPPool (%s); add a pool that contains it, or recreate the Service to get an IP from a pool",
			ip, poolList(r.sortedPoolsLocked()))}
	}
	r.setHolderLocked(ip, key) // a reserved address a Service already holds stays reserved
	return nil
}

// setHolderLocked records that key holds ip, which has an owner range, and marks it there.
func (r *Registry) setHolderLocked(ip netip.Addr, key types.NamespacedName) {
	if _, held := r.holders[ip]; !held {
		if p, rg := r.ownerLocked(ip); rg != nil {
			p.held[p.indexOf(rg)]++
		}
	}
	r.holders[ip] = key
	r.settleLocked(ip)
}

// dropHolderLocked forgets the Service holding ip, and frees ip if nothing else holds it.
func (r *Registry) dropHolderLocked(ip netip.Addr) {
	if _, held := r.holders[ip]; !held {
		return
	}
	delete(r.holders, ip)
	if p, rg := r.ownerLocked(ip); rg != nil {
		p.held[p.indexOf(rg)]--
	}
	r.settleLocked(ip)
}

// settleLocked marks ip in its owner range while a Service, a reservation, an IPAddress object,
// a claim or the stash holds it, and releases it (into quarantine, if the pool has one) once none
// does. A stashed address a Service or an IPAddress object turns out to hold leaves the stash.
func (r *Registry) settleLocked(ip netip.Addr) {
	_, rg := r.ownerLocked(ip)
	if rg == nil {
		return
	}
	_, held := r.holders[ip]
	_, pending := r.pending[ip]
	_, recorded := r.ipAddresses[ip]
	if held || recorded {
		r.forgetStashedLocked(ip)
	}
	_, stashed := r.stash[ip]
	c, claimed := r.claims[ip]
	if claimed && (held || recorded) && !c.used {
		c.used = true
		r.claims[ip] = c
	}
	if held || pending || recorded || claimed || stashed {
		_ = rg.Allocate(ip) // ErrAllocated: marked already; ErrReserved: stays reserved
		return
	}
	_ = rg.Release(ip)
}

// otherPoolLocked reports an address held in a pool that does not select the Service's
// namespace (the API server chose it while the webhook was unreachable).
func (r *Registry) otherPoolLocked(key types.NamespacedName, ip netip.Addr, nsLabels labels.Set) *Finding {
	owner, _ := r.ownerLocked(ip)
	cands := r.candidatesLocked(nsLabels)
	if owner == nil || slices.Contains(cands, owner) {
		return nil
	}
	return &Finding{Reason: ReasonOtherPool, Pool: owner.name, Message: fmt.Sprintf(
		"ClusterIP %s is in pool %s, which does not select namespace %s (it may use %s); recreate the Service to get an IP from its pool",
		ip, owner.name, key.Namespace, poolList(cands))}
}

func (r *Registry) sortedPoolsLocked() []*pool {
	var out []*pool
	for _, n := range slices.Sorted(maps.Keys(r.pools)) {
		if len(r.pools[n].ranges) > 0 {
			out = append(out, r.pools[n])
		}
	}
	return out
}

// releaseLocked forgets that key holds ip; the address goes back to its pool (into quarantine if
// the pool has one) unless another Service, a reservation or an IPAddress object still has it.
func (r *Registry) releaseLocked(key types.NamespacedName, ip netip.Addr) {
	if i := slices.Index(r.outside[ip], key); i >= 0 {
		r.outside[ip] = slices.Delete(r.outside[ip], i, i+1)
		if len(r.outside[ip]) == 0 {
			delete(r.outside, ip)
		}
		return
	}
	if i := slices.Index(r.extra[ip], key); i >= 0 {
		r.extra[ip] = slices.Delete(r.extra[ip], i, i+1)
		if len(r.extra[ip]) == 0 {
			delete(r.extra, ip)
		}
		return
	}
	if r.holders[ip] != key {
		return
	}
	if next := r.extra[ip]; len(next) > 0 {
		r.holders[ip] = next[0]
		if r.extra[ip] = next[1:]; len(r.extra[ip]) == 0 {
			delete(r.extra, ip)
		}
		return
	}
	r.dropHolderLocked(ip)
}

// Observe records the ClusterIPs a Service holds now (nil when it is gone or has none): new ones
// are adopted into their pool, ones it no longer holds are released. Reservations the webhook made
// are never released here. It returns what the user should be told about the new addresses.
func (r *Registry) Observe(key types.NamespacedName, ips []netip.Addr, namespaceLabels labels.Set) []Finding {
	r.mu.Lock()
	prev := r.services[key].ips
	if len(ips) == 0 {
		delete(r.services, key)
	} else {
		r.services[key] = observed{ips: slices.Clone(ips), namespaceLabels: namespaceLabels}
	}
	touched := map[string]bool{}
	mark := func(ip netip.Addr) {
		if p, _ := r.ownerLocked(ip); p != nil {
			touched[p.name] = true
		}
	}
	for _, ip := range prev {
		if !slices.Contains(ips, ip) {
			r.releaseLocked(key, ip)
			if delete(r.evicted[ip], key); len(r.evicted[ip]) == 0 {
				delete(r.evicted, ip)
			}
			mark(ip)
		}
	}
	var findings []Finding
	for _, ip := range ips {
		if slices.Contains(prev, ip) {
			continue
		}
		mark(ip)
		f := r.holdLocked(key, ip)
		if f == nil {
			f = r.otherPoolLocked(key, ip, namespaceLabels)
		}
		if f != nil {
			if f.Pool == "" {
				if cands := r.candidatesLocked(namespaceLabels); len(cands) > 0 {
					f.Pool = cands[0].name
					touched[f.Pool] = true
				}
			}
			findings = append(findings, *f)
		}
	}
	r.mu.Unlock()
	r.notify(slices.Sorted(maps.Keys(touched)))
	return findings
}

// ObserveIPAddress records that the API server has an IPAddress object for ip, naming parent
// (zero when none). While it has, ip is not handed out, whatever the parent. A webhook
// reservation for the object's own Service ends there: the object guards the address from then
// on, and its deletion (with the Service, or by kube-apiserver's repair loop) frees it.
//
// uid identifies the object: one ForgetStaleHold was told is gone is not taken back by a late
// event about it.
func (r *Registry) ObserveIPAddress(ip netip.Addr, parent types.NamespacedName, uid types.UID) {
	r.mu.Lock()
	if uid != "" && r.goneIPAddresses[ip] == uid {
		r.mu.Unlock()
		return
	}
	r.ipAddresses[ip] = parent
	r.ipAddressUIDs[ip] = uid
	if res, ok := r.pending[ip]; ok && res.isFor(parent) {
		delete(r.pending, ip)
	}
	r.settleIPAddressLocked(ip)
}

// IPAddressGone records that the IPAddress object for ip, naming parent, was deleted. A
// reservation for parent ends with it: its create failed, or its Service was deleted before the
// repair loop saw it.
func (r *Registry) IPAddressGone(ip netip.Addr, parent types.NamespacedName, uid types.UID) {
	r.mu.Lock()
	if r.goneIPAddresses[ip] == uid {
		delete(r.goneIPAddresses, ip)
	}
	if cur, ok := r.ipAddressUIDs[ip]; ok && cur != uid && uid != "" {
		r.mu.Unlock() // a later object for ip replaced this one
		return
	}
	delete(r.ipAddresses, ip)
	delete(r.ipAddressUIDs, ip)
	if res, ok := r.pending[ip]; ok && res.isFor(parent) {
		delete(r.pending, ip)
	}
	r.settleIPAddressLocked(ip)
}

// settleIPAddressLocked settles ip, unlocks, and tells its pool.
func (r *Registry) settleIPAddressLocked(ip netip.Addr) {
	r.settleLocked(ip)
	p, _ := r.ownerLocked(ip)
	r.mu.Unlock()
	if p != nil {
		r.changed(p.name)
	}
}

// ForgetStaleHold is told that the API server has no IPAddress object for ip (read live):
// kube-apiserver then grants ip to the next create that asks for it, even while our caches still
// show the Service it deleted, or that Service's IPAddress. It forgets both and reports whether
// ip is free of such holds now, so that the refused request is worth trying again: also when the
// repair loop released them itself between the refusal and the live read (the deletions arrive
// just then), and not when another Service holds ip too (a duplicate stays known, and reported).
func (r *Registry) ForgetStaleHold(ip netip.Addr) bool {
	r.mu.Lock()
	parent, recorded := r.ipAddresses[ip]
	holder, held := r.holders[ip]
	held = held && len(r.extra[ip]) == 0 // a duplicate stays known, and reported
	if uid := r.ipAddressUIDs[ip]; recorded && uid != "" {
		r.goneIPAddresses[ip] = uid
	}
	delete(r.ipAddresses, ip)
	delete(r.ipAddressUIDs, ip)
	if recorded && parent.Name != "" {
		r.evictLocked(ip, parent)
	}
	if held {
		// Our caches show a Service kube-apiserver deleted (or, rarely, one that lost its
		// IPAddress: its repair loop re-creates that, and a Service granted ip meanwhile is a
		// duplicate, as upstream). A late view of that Service must not take ip back.
		r.dropHolderLocked(ip)
		r.evictLocked(ip, holder)
	}
	r.settleLocked(ip)
	_, stillHeld := r.holders[ip]
	p, _ := r.ownerLocked(ip)
	r.mu.Unlock()
	if p != nil && (recorded || held) {
		r.changed(p.name)
	}
	return !stillHeld
}

// evictLocked records that key no longer holds ip, whatever a late view of it says.
func (r *Registry) evictLocked(ip netip.Addr, key types.NamespacedName) {
	if r.evicted[ip] == nil {
		r.evicted[ip] = map[types.NamespacedName]bool{}
	}
	r.evicted[ip][key] = true
}

// YieldReservation is told that the API server already has an IPAddress object, naming parent,
// for ip, which the webhook has just reserved for key: key does not get ip after all. The address
// stays held until that object is gone: if the registry has not seen the object yet, the
// reservation passes to parent, and ends when the object shows up (or expires).
func (r *Registry) YieldReservation(key types.NamespacedName, ip netip.Addr, parent types.NamespacedName) {
	r.mu.Lock()
	if res, ok := r.pending[ip]; ok && res.isFor(key) {
		if _, recorded := r.ipAddresses[ip]; recorded {
			delete(r.pending, ip)
		} else {
			r.pending[ip] = reservation{service: parent, deadline: res.deadline}
		}
		r.settleLocked(ip)
	}
	r.mu.Unlock()
}

// CancelReservations drops the reservations key has on ips: the webhook will not hand them out
// after all.
func (r *Registry) CancelReservations(key types.NamespacedName, ips []netip.Addr) {
	r.mu.Lock()
	var touched []string
	for _, ip := range ips {
		if res, ok := r.pending[ip]; ok && res.isFor(key) {
			delete(r.pending, ip)
			if r.claims[ip].unbound { // taken from the stash: not handed out after all
				r.giveBackClaimLocked(ip)
			}
			r.settleLocked(ip)
			if p, _ := r.ownerLocked(ip); p != nil {
				touched = append(touched, p.name)
			}
		}
	}
	r.mu.Unlock()
	r.notify(touched)
}

// Observed returns the ClusterIPs the registry last saw Service key hold.
func (r *Registry) Observed(key types.NamespacedName) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.services[key].ips)
}

// Pending returns the number of reservations waiting for their Service.
func (r *Registry) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// HolderOf returns the Service holding ip, and whether one does.
func (r *Registry) HolderOf(ip netip.Addr) (types.NamespacedName, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key, ok := r.holders[ip]
	return key, ok
}

// Snapshots returns each pool's allocator snapshots by CIDR, to compare bitmaps. The stash is
// left out: a replica sets it aside anew after every start.
func (r *Registry) Snapshots() (map[string][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for _, p := range r.pools {
		for _, rg := range p.ranges {
			b, err := rg.Snapshot()
			if err == nil {
				b, err = r.withoutStashLocked(rg, b)
			}
			if err != nil {
				return nil, fmt.Errorf("snapshot pool %s range %s: %w", p.name, rg.CIDR(), err)
			}
			out[p.name+"/"+rg.CIDR().String()] = b
		}
	}
	return out, nil
}

// withoutStashLocked returns snapshot (of rg) with the stashed addresses of rg freed.
func (r *Registry) withoutStashLocked(rg *allocator.Range, snapshot []byte) ([]byte, error) {
	var stashed []netip.Addr
	for ip := range r.stash {
		if _, owner := r.ownerLocked(ip); owner == rg {
			stashed = append(stashed, ip)
		}
	}
	if len(stashed) == 0 {
		return snapshot, nil
	}
	scratch, err := allocator.NewRange(rg.CIDR())
	if err != nil {
		return nil, err
	}
	if err := scratch.Restore(snapshot); err != nil {
		return nil, err
	}
	for _, ip := range stashed {
		_ = scratch.Release(ip)
	}
	return scratch.Snapshot()
}
