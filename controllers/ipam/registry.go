package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
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
)

// AdmissionError is why a Service cannot have the ClusterIPs it asks for. Reason is one of the
// Reason constants, Pool the pool concerned (may be empty).
type AdmissionError struct {
	Reason string
	Pool   string
	Err    error
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
	selectorErr  string   // why spec.namespaceSelector does not parse
	invalid      string   // why the pool hands out nothing; empty when Ready
}

func (p *pool) families() []allocator.Family {
	fs := make([]allocator.Family, 0, len(p.ranges))
	for _, r := range p.ranges {
		fs = append(fs, r.Family())
	}
	return fs
}

func (p *pool) rangeOf(f allocator.Family) (int, *allocator.Range) {
	for i, r := range p.ranges {
		if r.Family() == f {
			return i, r
		}
	}
	return -1, nil
}

func (p *pool) cidrs() string {
	var s []string
	for _, r := range p.ranges {
		s = append(s, r.CIDR().String())
	}
	return strings.Join(s, ", ")
}

// Registry holds every pool's bitmaps and who holds which address. It is the pure core of
// assignment: the webhooks ask it for addresses, the repair loop tells it what Services hold.
// Every address lives in exactly one pool, its owner: the pool with the narrowest CIDR containing
// it, so a tenant pool nested in the default pool is carved out of it. Safe for concurrent use.
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
	changed  func(pool string)
	ready    chan struct{}
	once     sync.Once
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
		ready:    make(chan struct{}),
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
	names := slices.Sorted(maps.Keys(r.pools))
	seen := map[netip.Prefix]string{}
	for _, name := range names {
		p := r.pools[name]
		p.invalid, p.ranges, p.carved, p.shadowed = p.selectorErr, nil, nil, nil
		if p.invalid != "" {
			continue
		}
		var opts []allocator.Option
		if q := p.spec.QuarantineSeconds; q != nil && *q > 0 {
			opts = append(opts, allocator.WithQuarantine(time.Duration(*q)*time.Second))
		}
		for _, c := range p.spec.CIDRs {
			prefix, err := netip.ParsePrefix(c)
			if err != nil {
				p.invalid = fmt.Sprintf("spec.cidrs: %q is not a CIDR", c)
				break
			}
			prefix = prefix.Masked()
			if other, dup := seen[prefix]; dup {
				p.invalid = fmt.Sprintf("CIDR %s is also pool %s's; give each pool its own CIDR", prefix, other)
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
	}
	r.carveLocked()
	r.replayLocked()
	return names
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

// replayLocked marks the addresses of every known Service and reservation in the new ranges.
func (r *Registry) replayLocked() {
	r.holders = map[netip.Addr]types.NamespacedName{}
	r.extra = map[netip.Addr][]types.NamespacedName{}
	r.outside = map[netip.Addr][]types.NamespacedName{}
	for _, ip := range slices.SortedFunc(maps.Keys(r.pending), netip.Addr.Compare) {
		if _, rg := r.ownerLocked(ip); rg != nil {
			_ = rg.Allocate(ip)
		}
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
	if _, ok := r.pending[ip]; ok {
		delete(r.pending, ip) // the Service is the truth, whoever the reservation was for
		if _, held := r.holders[ip]; !held {
			r.holders[ip] = key
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
	_ = rg.Allocate(ip) // ErrReserved: a reserved address a Service already holds stays reserved
	r.holders[ip] = key
	return nil
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
// the pool has one) unless another Service or a reservation still has it.
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
	delete(r.holders, ip)
	if _, ok := r.pending[ip]; ok {
		return
	}
	if _, rg := r.ownerLocked(ip); rg != nil {
		_ = rg.Release(ip)
	}
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
			mark(ip)
		}
	}
	var findings []Finding
	for _, ip := range ips {
		if slices.Contains(prev, ip) {
			continue
		}
		mark(ip)
		if f := r.holdLocked(key, ip); f != nil {
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

// AssignRequest is a Service at admission.
type AssignRequest struct {
	Service         types.NamespacedName
	NamespaceLabels labels.Set
	Policy          *corev1.IPFamilyPolicy
	IPFamilies      []corev1.IPFamily
	// Requested are the ClusterIPs the object names already (asked for by the user, or kept on
	// update); they are honoured when free in a pool the namespace may use.
	Requested []netip.Addr
	// Previous are the ClusterIPs the Service had before an update; they always pass.
	Previous []netip.Addr
	// DryRun checks everything but reserves nothing and hands out no dynamic address.
	DryRun bool
}

// Assign returns the Service's ClusterIPs: the requested ones, then one per missing family from
// the most specific pool for the namespace. New addresses are reserved for the Service until the
// repair loop sees it hold them, or the grace period ends.
func (r *Registry) Assign(req AssignRequest) ([]netip.Addr, error) {
	r.mu.Lock()
	ips, touched, err := r.assignLocked(req)
	r.mu.Unlock()
	r.notify(touched)
	return ips, err
}

func (r *Registry) assignLocked(req AssignRequest) ([]netip.Addr, []string, error) {
	cands := r.candidatesLocked(req.NamespaceLabels)
	if len(cands) == 0 {
		return nil, nil, &AdmissionError{Reason: ReasonNoPool, Err: fmt.Errorf(
			"no ClusterIPPool selects namespace %s (pools: %s); create one, or label the namespace to match one",
			req.Service.Namespace, poolList(r.sortedPoolsLocked()))}
	}
	var fresh []netip.Addr
	for _, ip := range req.Requested {
		if slices.Contains(req.Previous, ip) {
			continue
		}
		isNew, err := r.checkRequestedLocked(req.Service, ip, cands)
		if err != nil {
			return nil, nil, err
		}
		if isNew {
			fresh = append(fresh, ip)
		}
	}
	chosen := cands[0]
	want, err := WantFamilies(req.Policy, req.IPFamilies, req.Requested, chosen.name, chosen.families())
	switch {
	case err != nil && len(req.Requested) > 0 && !requiresDualStack(req):
		// The Service has its addresses; its pool just cannot add a second family.
		want = nil
	case err != nil:
		return nil, nil, &AdmissionError{Reason: ReasonFamily, Pool: chosen.name, Err: err}
	}
	var missing []allocator.Family
	for i := len(req.Requested); i < len(want); i++ {
		missing = append(missing, want[i])
	}
	for _, f := range missing {
		if _, rg := chosen.rangeOf(f); rg.Free() == 0 {
			return nil, []string{chosen.name}, r.fullError(chosen, rg)
		}
	}
	if req.DryRun {
		return append(slices.Clone(req.Requested), r.peekLocked(chosen, missing)...), nil, nil
	}
	ips := slices.Clone(req.Requested)
	for _, ip := range fresh {
		_, rg := r.ownerLocked(ip)
		if err := rg.Allocate(ip); err != nil {
			r.rollbackLocked(fresh[:slices.Index(fresh, ip)])
			return nil, nil, &AdmissionError{Reason: ReasonAllocated, Err: err}
		}
	}
	var dynamic []netip.Addr
	for _, f := range missing {
		ip, err := r.allocateNextLocked(chosen, f)
		if err != nil {
			r.rollbackLocked(append(fresh, dynamic...))
			return nil, []string{chosen.name}, err
		}
		dynamic = append(dynamic, ip)
	}
	deadline := r.now().Add(r.grace)
	for _, ip := range append(fresh, dynamic...) {
		r.pending[ip] = reservation{service: req.Service, deadline: deadline}
	}
	touched := []string{chosen.name}
	for _, ip := range fresh {
		if p, _ := r.ownerLocked(ip); p != nil && p != chosen {
			touched = append(touched, p.name)
		}
	}
	return append(ips, dynamic...), touched, nil
}

// checkRequestedLocked says whether key may have ip, and whether it is new to key.
func (r *Registry) checkRequestedLocked(key types.NamespacedName, ip netip.Addr, cands []*pool) (bool, error) {
	if r.holders[ip] == key || slices.Contains(r.extra[ip], key) || slices.Contains(r.outside[ip], key) {
		return false, nil
	}
	if res, ok := r.pending[ip]; ok && res.isFor(key) {
		return false, nil
	}
	owner, rg := r.ownerLocked(ip)
	if owner == nil {
		return false, &AdmissionError{Reason: ReasonOutOfRange, Err: fmt.Errorf(
			"%w: %s is outside every pool namespace %s may use: %s; request an IP from one of them, or leave spec.clusterIP empty",
			allocator.ErrNotInRange, ip, key.Namespace, poolList(cands))}
	}
	if !slices.Contains(cands, owner) {
		return false, &AdmissionError{Reason: ReasonOutOfRange, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s belongs to pool %s, which does not select namespace %s; it may use %s",
			allocator.ErrNotInRange, ip, owner.name, key.Namespace, poolList(cands))}
	}
	if holder, ok := r.holders[ip]; ok {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s is held by Service %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, holder)}
	}
	if res, ok := r.pending[ip]; ok {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s is being assigned to Service %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, serviceName(res.service))}
	}
	if rg.IsReserved(ip) {
		return false, &AdmissionError{Reason: ReasonReserved, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s is in its spec.reserved and is never assigned; request a different IP or leave spec.clusterIP empty",
			allocator.ErrReserved, ip, owner.name)}
	}
	if rg.Has(ip) {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name)}
	}
	return true, nil
}

func serviceName(key types.NamespacedName) string {
	if key.Name == "" {
		return key.Namespace + "/<generated name>"
	}
	return key.String()
}

func (r *Registry) fullError(p *pool, rg *allocator.Range) error {
	return &AdmissionError{Reason: ReasonFull, Pool: p.name, Err: fmt.Errorf(
		"%w: pool %s has no free %s address in %s; grow it by adding or enlarging a CIDR in spec.cidrs "+
			"(kubectl edit clusterippool %s), or delete Services that use it",
		allocator.ErrFull, p.name, rg.Family(), rg.CIDR(), p.name)}
}

// allocateNextLocked takes a free address of family f from p, skipping addresses owned by a
// large nested pool (they stay marked, counted as shadowed). It gives up after maxShadowSkips
// such addresses in one call.
func (r *Registry) allocateNextLocked(p *pool, f allocator.Family) (netip.Addr, error) {
	i, rg := p.rangeOf(f)
	for skipped := 0; ; skipped++ {
		if skipped == maxShadowSkips {
			return netip.Addr{}, &AdmissionError{Reason: ReasonFull, Pool: p.name, Err: fmt.Errorf(
				"%w: pool %s found no free %s address outside the pools nested in %s after %d tries; "+
					"make the nested pools smaller than %d addresses or give the pool its own CIDR",
				allocator.ErrFull, p.name, rg.Family(), rg.CIDR(), maxShadowSkips, maxCarve)}
		}
		ip, err := rg.AllocateNext()
		if errors.Is(err, allocator.ErrFull) {
			return netip.Addr{}, r.fullError(p, rg)
		}
		if err != nil {
			return netip.Addr{}, err
		}
		if _, owner := r.ownerLocked(ip); owner == rg {
			return ip, nil
		}
		p.shadowed[i]++
	}
}

// peekLocked returns addresses a dry run would get, reserving nothing. A pool with a quarantine
// would put them in quarantine on release, so its dry runs get no dynamic address (the API server
// shows one of its own).
func (r *Registry) peekLocked(p *pool, families []allocator.Family) []netip.Addr {
	if q := p.spec.QuarantineSeconds; q != nil && *q > 0 {
		return nil
	}
	var ips []netip.Addr
	for _, f := range families {
		ip, err := r.allocateNextLocked(p, f)
		if err != nil {
			break
		}
		ips = append(ips, ip)
	}
	r.rollbackLocked(ips)
	if len(ips) < len(families) {
		return nil
	}
	return ips
}

func requiresDualStack(req AssignRequest) bool {
	if req.Policy != nil {
		return *req.Policy == corev1.IPFamilyPolicyRequireDualStack
	}
	return len(req.IPFamilies) == 2
}

// rollbackLocked undoes allocations of a failed request; they were never visible to anyone.
func (r *Registry) rollbackLocked(ips []netip.Addr) {
	for _, ip := range ips {
		if _, rg := r.ownerLocked(ip); rg != nil {
			_ = rg.Release(ip)
		}
	}
}

// Validate checks the ClusterIPs of a Service's final object at admission: each one is reserved
// for it, already held by it, or free in a pool its namespace may use (then it is reserved now,
// unless dryRun). previous are the IPs the Service had before an update; they always pass.
func (r *Registry) Validate(key types.NamespacedName, ips, previous []netip.Addr, nsLabels labels.Set, dryRun bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cands := r.candidatesLocked(nsLabels)
	var fresh []netip.Addr
	for _, ip := range ips {
		if slices.Contains(previous, ip) {
			continue
		}
		if res, ok := r.pending[ip]; ok && res.isFor(key) {
			if res.service.Name == "" { // the name is generated between mutation and validation
				r.pending[ip] = reservation{service: key, deadline: res.deadline}
			}
			continue
		}
		isNew, err := r.checkRequestedLocked(key, ip, cands)
		if err != nil {
			r.rollbackLocked(fresh)
			return err
		}
		if isNew && !dryRun {
			_, rg := r.ownerLocked(ip)
			if err := rg.Allocate(ip); err != nil {
				r.rollbackLocked(fresh)
				return &AdmissionError{Reason: ReasonAllocated, Err: err}
			}
			fresh = append(fresh, ip)
		}
	}
	deadline := r.now().Add(r.grace)
	for _, ip := range fresh {
		r.pending[ip] = reservation{service: key, deadline: deadline}
	}
	return nil
}

// Reservation is a webhook reservation whose grace period is over.
type Reservation struct {
	IP      netip.Addr
	Service types.NamespacedName
}

// ExpiredReservations returns the reservations whose Service has not been seen in time.
func (r *Registry) ExpiredReservations() []Reservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []Reservation
	for ip, res := range r.pending {
		if now.After(res.deadline) {
			out = append(out, Reservation{IP: ip, Service: res.service})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// DropReservation frees an expired reservation whose Service turned out not to exist (the
// request was a failed create, or the Service was deleted before the repair loop saw it).
func (r *Registry) DropReservation(res Reservation) {
	r.mu.Lock()
	cur, ok := r.pending[res.IP]
	if !ok || cur.service != res.Service || !r.now().After(cur.deadline) {
		r.mu.Unlock()
		return
	}
	delete(r.pending, res.IP)
	var touched []string
	if _, held := r.holders[res.IP]; !held {
		if p, rg := r.ownerLocked(res.IP); rg != nil {
			_ = rg.Release(res.IP)
			touched = append(touched, p.name)
		}
	}
	r.mu.Unlock()
	r.notify(touched)
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

// Snapshots returns each pool's allocator snapshots by CIDR, to compare bitmaps.
func (r *Registry) Snapshots() (map[string][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for _, p := range r.pools {
		for _, rg := range p.ranges {
			b, err := rg.Snapshot()
			if err != nil {
				return nil, fmt.Errorf("snapshot pool %s range %s: %w", p.name, rg.CIDR(), err)
			}
			out[p.name+"/"+rg.CIDR().String()] = b
		}
	}
	return out, nil
}
