package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/allocator"
)

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
	// KeepFamilies adds no family: an update that changes neither ipFamilyPolicy nor ipFamilies
	// (kube-apiserver never upgrades a PreferDualStack Service on its own either).
	KeepFamilies bool
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
	if len(cands) == 0 && len(req.Requested) > 0 && isSubset(req.Requested, req.Previous) && !requiresDualStack(req) {
		return req.Requested, nil, nil // an update that keeps the addresses needs no pool
	}
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
	var want []allocator.Family
	if !req.KeepFamilies {
		var err error
		want, err = WantFamilies(req.Policy, req.IPFamilies, req.Requested, chosen.name, chosen.families())
		switch {
		case err != nil && len(req.Requested) > 0 && !requiresDualStack(req):
			want = nil // the Service has its addresses; its pool just cannot add a second family
		case err != nil:
			return nil, nil, &AdmissionError{Reason: ReasonFamily, Pool: chosen.name, Err: err}
		}
	}
	var missing []allocator.Family
	for i := len(req.Requested); i < len(want); i++ {
		missing = append(missing, want[i])
	}
	for _, f := range missing {
		if _, _, err := chosen.rangeFor(f); err != nil {
			return nil, []string{chosen.name}, err
		}
	}
	if req.DryRun {
		return append(slices.Clone(req.Requested), r.peekLocked(chosen, missing)...), nil, nil
	}
	ips := slices.Clone(req.Requested)
	for _, ip := range fresh {
		if err := r.allocateRequestedLocked(ip, req.Service); err != nil {
			r.rollbackLocked(fresh[:slices.Index(fresh, ip)])
			return nil, nil, &AdmissionError{Reason: ReasonAllocated, IP: ip, Err: err}
		}
	}
	var dynamic []netip.Addr
	checked := map[netip.Addr]bool{}
	for _, f := range missing {
		if ip, ok := r.takeStashedLocked(chosen, f, req.Service); ok {
			dynamic, checked[ip] = append(dynamic, ip), true
			continue
		}
		ip, err := r.allocateNextLocked(chosen, f)
		if err != nil {
			r.rollbackLocked(append(fresh, dynamic...))
			return nil, []string{chosen.name}, err
		}
		dynamic = append(dynamic, ip)
	}
	deadline := r.now().Add(r.grace)
	for _, ip := range append(fresh, dynamic...) {
		r.pending[ip] = reservation{service: req.Service, deadline: deadline, checked: checked[ip]}
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
func (r *Registry) checkRequestedLocked(key types.NamespacedName, ip netip.Addr, cands []*pool) (isNew bool, err error) {
	defer func() { refusedIP(err, ip) }()
	if r.holders[ip] == key || slices.Contains(r.extra[ip], key) || slices.Contains(r.outside[ip], key) {
		return false, nil
	}
	if res, ok := r.pending[ip]; ok && res.isFor(key) {
		return false, nil
	}
	if parent, ok := r.ipAddresses[ip]; ok && parent == key {
		// kube-apiserver allocates (creates the IPAddress) before it calls the validating webhooks.
		return false, nil
	}
	if c, ok := r.claims[ip]; ok && c.isFor(key) {
		return false, nil
	}
	owner, rg := r.ownerLocked(ip)
	if owner == nil && len(cands) > 0 && !slices.ContainsFunc(cands, func(p *pool) bool { return slices.Contains(p.families(), allocator.FamilyOf(ip)) }) {
		return false, &AdmissionError{Reason: ReasonFamily, Pool: cands[0].name, Err: fmt.Errorf(
			"%w: %s is an %s address, and no pool namespace %s may use has an %s CIDR: %s; request an IP from one of them, or leave spec.clusterIP empty",
			allocator.ErrNotInRange, ip, allocator.FamilyOf(ip), key.Namespace, allocator.FamilyOf(ip), poolList(cands))}
	}
	if owner == nil {
		if p, why := r.uncoveredLocked(ip); p != nil {
			return false, &AdmissionError{Reason: ReasonOutsideServiceCIDRs, Pool: p.name, Err: fmt.Errorf(
				"%w: %s in pool %s: %s; request a different IP or leave spec.clusterIP empty",
				allocator.ErrNotInRange, ip, p.name, why)}
		}
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
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Held: ip, Err: fmt.Errorf(
			"%w: %s in pool %s is held by Service %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, holder)}
	}
	if res, ok := r.pending[ip]; ok {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Contested: ip, Err: fmt.Errorf(
			"%w: %s in pool %s is being assigned to Service %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, serviceName(res.service))}
	}
	if c, ok := r.claims[ip]; ok {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Contested: ip, Err: fmt.Errorf(
			"%w: %s in pool %s is being assigned to %s; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, c.claimant())}
	}
	if parent, ok := r.ipAddresses[ip]; ok {
		return false, &AdmissionError{Reason: ReasonAllocated, Pool: owner.name, Held: ip, Err: fmt.Errorf(
			"%w: %s in pool %s has an IPAddress object%s in the API server; request a different IP or leave spec.clusterIP empty to get a free one",
			allocator.ErrAllocated, ip, owner.name, ipAddressParentText(parent))}
	}
	if why := owner.unusable[owner.indexOf(rg)]; why != "" {
		return false, &AdmissionError{Reason: ReasonOutsideServiceCIDRs, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s: %s; request a different IP or leave spec.clusterIP empty",
			allocator.ErrNotInRange, ip, owner.name, why)}
	}
	if rg.IsReserved(ip) {
		return false, &AdmissionError{Reason: ReasonReserved, Pool: owner.name, Err: fmt.Errorf(
			"%w: %s in pool %s is in its spec.reserved and is never assigned; request a different IP or leave spec.clusterIP empty",
			allocator.ErrReserved, ip, owner.name)}
	}
	if e, stashed := r.stash[ip]; stashed && e.ready {
		return true, nil // set aside by this replica, and free to users (allocateRequestedLocked)
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

func fullError(p *pool, rg *allocator.Range) error {
	return &AdmissionError{Reason: ReasonFull, Pool: p.name, Err: fmt.Errorf(
		"%w: pool %s has no free %s address in %s; grow it by adding or enlarging a CIDR in spec.cidrs "+
			"(kubectl edit clusterippool %s), or delete Services that use it",
		allocator.ErrFull, p.name, rg.Family(), rg.CIDR(), p.name)}
}

// allocateNextLocked takes a free address of family f from p, skipping addresses owned by a
// large nested pool (they stay marked, counted as shadowed). It gives up after maxShadowSkips
// such addresses in one call.
func (r *Registry) allocateNextLocked(p *pool, f allocator.Family) (netip.Addr, error) {
	i, rg, err := p.rangeFor(f)
	if err != nil {
		return netip.Addr{}, err
	}
	for skipped := 0; ; skipped++ {
		if skipped == maxShadowSkips {
			return netip.Addr{}, &AdmissionError{Reason: ReasonFull, Pool: p.name, Err: fmt.Errorf(
				"%w: pool %s found no free %s address outside the pools nested in %s after %d tries; "+
					"make the nested pools smaller than %d addresses or give the pool its own CIDR",
				allocator.ErrFull, p.name, rg.Family(), rg.CIDR(), maxShadowSkips, maxCarve)}
		}
		ip, err := rg.AllocateNext()
		if errors.Is(err, allocator.ErrFull) {
			return netip.Addr{}, fullError(p, rg)
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
	return req.Policy != nil && *req.Policy == corev1.IPFamilyPolicyRequireDualStack
}

// allocateRequestedLocked marks a requested address checkRequestedLocked found free as taken for
// key; one this replica has set aside leaves the stash, and its claim is key's.
func (r *Registry) allocateRequestedLocked(ip netip.Addr, key types.NamespacedName) error {
	if e, stashed := r.stash[ip]; stashed && e.ready {
		r.handOutStashedLocked(ip, key)
		return nil
	}
	_, rg := r.ownerLocked(ip)
	return rg.Allocate(ip)
}

// rollbackLocked undoes allocations of a failed request; they were never visible to anyone. An
// address taken from the stash keeps its claim, which is due now that nothing else holds it.
func (r *Registry) rollbackLocked(ips []netip.Addr) {
	for _, ip := range ips {
		if r.claims[ip].unbound {
			r.giveBackClaimLocked(ip)
		}
		if _, rg := r.ownerLocked(ip); rg != nil {
			_ = rg.Release(ip)
		}
		r.settleLocked(ip)
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
			res.service = key // the name is generated between mutation and validation
			res.validated = res.validated || !dryRun
			r.pending[ip] = res
			continue
		}
		isNew, err := r.checkRequestedLocked(key, ip, cands)
		if err != nil {
			r.rollbackLocked(fresh)
			return err
		}
		if isNew && !dryRun {
			if err := r.allocateRequestedLocked(ip, key); err != nil {
				r.rollbackLocked(fresh)
				return &AdmissionError{Reason: ReasonAllocated, IP: ip, Err: err}
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
	made    time.Time
}

// ExpiredReservations returns the reservations whose Service has not been seen in time.
func (r *Registry) ExpiredReservations() []Reservation {
	return r.ReservationsToReclaim(r.grace, false)
}

// ReservationsToReclaim returns the reservations a live check can settle now: with
// ipAddresses (the API server has IPAddress objects) those our validating webhook has seen
// (their IPAddress was created before it), and the others once they are age old (longer than
// kube-apiserver takes from our mutating webhook to the IPAddress).
func (r *Registry) ReservationsToReclaim(age time.Duration, ipAddresses bool) []Reservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []Reservation
	for ip, res := range r.pending {
		if made := res.deadline.Add(-r.grace); (ipAddresses && res.validated) || !now.Before(made.Add(age)) {
			out = append(out, Reservation{IP: ip, Service: res.service, made: made})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// DropReservation frees a reservation whose Service turned out not to hold its address (the
// request was a failed create, or the Service was deleted before the repair loop saw it),
// unless the reservation changed since it was listed.
func (r *Registry) DropReservation(res Reservation) {
	r.mu.Lock()
	cur, ok := r.pending[res.IP]
	if !ok || cur.service != res.Service || !cur.deadline.Add(-r.grace).Equal(res.made) {
		r.mu.Unlock()
		return
	}
	delete(r.pending, res.IP)
	r.settleLocked(res.IP)
	var touched []string
	if p, _ := r.ownerLocked(res.IP); p != nil {
		touched = append(touched, p.name)
	}
	r.mu.Unlock()
	r.notify(touched)
}

func isSubset(ips, of []netip.Addr) bool {
	for _, ip := range ips {
		if !slices.Contains(of, ip) {
			return false
		}
	}
	return true
}
