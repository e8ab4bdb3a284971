package ipam

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// maxListed is how many offending addresses a condition message names.
const maxListed = 3

// PoolStatus is what the registry knows of a pool, for its status and metrics.
type PoolStatus struct {
	Status ipamv1alpha1.ClusterIPPoolStatus
	// Duplicates and OutOfRange count the addresses held twice, and the Services' addresses
	// outside every pool that are attributed to this pool.
	Duplicates, OutOfRange int
}

// Status computes the status of pool name from the bitmaps; conditions keep their transition
// times from current. The boolean is false when the registry does not know the pool.
func (r *Registry) Status(name string, generation int64, current []metav1.Condition) (PoolStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pools[name]
	if !ok {
		return PoolStatus{}, false
	}
	st := ipamv1alpha1.ClusterIPPoolStatus{ObservedGeneration: generation}
	for _, c := range current {
		st.Conditions = append(st.Conditions, *c.DeepCopy())
	}
	var free uint64
	var full []string
	for i, rg := range p.ranges {
		capacity := rg.Capacity() - p.carved[i]
		used := p.held[i] + r.reservedOnlyLocked(rg)
		rgFree := rg.Free() + r.setAsideLocked(rg)
		fs := ipamv1alpha1.FamilyStatus{
			Family:    ipFamilyOf(rg.Family()),
			CIDR:      rg.CIDR().String(),
			Capacity:  strconv.FormatUint(capacity, 10),
			Allocated: int64(used),
			Reserved:  p.reservedIn(rg.CIDR()),
			Free:      strconv.FormatUint(rgFree, 10),
		}
		st.Families = append(st.Families, fs)
		st.Allocated += int64(used)
		free += rgFree
		if rgFree == 0 {
			full = append(full, fmt.Sprintf("%s %s", rg.Family(), rg.CIDR()))
		}
	}
	st.Free = strconv.FormatUint(free, 10)

	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason,
			Message: msg, ObservedGeneration: generation})
	}
	var refused []string
	for _, why := range p.unusable {
		if why != "" {
			refused = append(refused, why)
		}
	}
	usable := len(p.ranges) - len(refused)
	for _, u := range p.uncovered {
		refused = append(refused, u.why())
	}
	switch {
	case p.invalid != "":
		set(ipamv1alpha1.ConditionReady, metav1.ConditionFalse, "InvalidSpec", p.invalid)
	case len(p.ranges) > 0 && usable == 0:
		set(ipamv1alpha1.ConditionReady, metav1.ConditionFalse, ReasonOutsideServiceCIDRs, "hands out no address: "+strings.Join(refused, "; "))
	default:
		set(ipamv1alpha1.ConditionReady, metav1.ConditionTrue, "Allocating", "hands out addresses from "+p.usableCIDRs())
	}
	switch {
	case len(refused) > 0:
		set(ipamv1alpha1.ConditionOutsideServiceCIDRs, metav1.ConditionTrue, ReasonOutsideServiceCIDRs, strings.Join(refused, "; "))
	case r.serviceCIDRsKnown:
		set(ipamv1alpha1.ConditionOutsideServiceCIDRs, metav1.ConditionFalse, "InsideServiceCIDRs",
			"the API server accepts the addresses of every CIDR of the pool")
	}
	if len(full) > 0 {
		set(ipamv1alpha1.ConditionExhausted, metav1.ConditionTrue, ReasonFull, fmt.Sprintf(
			"range is full: no free address in %s; add or enlarge a CIDR in spec.cidrs, or delete Services that use the pool",
			strings.Join(full, ", ")))
	} else {
		set(ipamv1alpha1.ConditionExhausted, metav1.ConditionFalse, "HasFreeAddresses", "every family has free addresses")
	}

	out := PoolStatus{Status: st}
	var problems, reasons []string
	if p.overlaps {
		reasons = append(reasons, "OverlappingCIDR")
		problems = append(problems, p.invalid)
	}
	var dups []string
	for _, ip := range slices.SortedFunc(maps.Keys(r.extra), netip.Addr.Compare) {
		if owner, _ := r.ownerLocked(ip); owner == p {
			out.Duplicates++
			if len(dups) < maxListed {
				dups = append(dups, fmt.Sprintf("%s (%s, %s)", ip, r.holders[ip], joinKeys(r.extra[ip])))
			}
		}
	}
	if out.Duplicates > 0 {
		reasons = append(reasons, ReasonDuplicate)
		problems = append(problems, fmt.Sprintf("%d addresses are held by more than one Service, e.g. %s",
			out.Duplicates, strings.Join(dups, "; ")))
	}
	var outside []string
	for _, ip := range slices.SortedFunc(maps.Keys(r.outside), netip.Addr.Compare) {
		for _, key := range r.outside[ip] {
			if cands := r.candidatesLocked(r.services[key].namespaceLabels); len(cands) == 0 || cands[0] != p {
				continue
			}
			out.OutOfRange++
			if len(outside) < maxListed {
				outside = append(outside, fmt.Sprintf("%s (%s)", ip, key))
			}
		}
	}
	if out.OutOfRange > 0 {
		reasons = append(reasons, ReasonOutOfRange)
		problems = append(problems, fmt.Sprintf("%d ClusterIPs of Services this pool serves are outside every pool, e.g. %s",
			out.OutOfRange, strings.Join(outside, "; ")))
	}
	if len(problems) > 0 {
		set(ipamv1alpha1.ConditionConflicting, metav1.ConditionTrue, reasons[0], strings.Join(problems, "; "))
	} else {
		set(ipamv1alpha1.ConditionConflicting, metav1.ConditionFalse, "NoConflicts", "every address has one holder inside a pool")
	}
	out.Status = st
	return out, true
}

// reservedOnlyLocked counts the addresses of rg the webhook handed out to a Service not seen yet.
// An address only an IPAddress object holds (kube-apiserver's, for a Service that is gone or not
// seen yet) is neither allocated nor free.
func (r *Registry) reservedOnlyLocked(rg *allocator.Range) uint64 {
	var n uint64
	for ip := range r.pending {
		if _, held := r.holders[ip]; !held && rg.CIDR().Contains(ip) {
			if _, owner := r.ownerLocked(ip); owner == rg {
				n++
			}
		}
	}
	return n
}

// setAsideLocked counts the addresses of rg set aside for admissions, by this replica's stash or
// another's (a claim naming no Service), that nothing else holds: free as far as users go.
func (r *Registry) setAsideLocked(rg *allocator.Range) uint64 {
	var n uint64
	count := func(ip netip.Addr) {
		_, held := r.holders[ip]
		_, pending := r.pending[ip]
		_, recorded := r.ipAddresses[ip]
		if _, owner := r.ownerLocked(ip); !held && !pending && !recorded && owner == rg {
			n++
		}
	}
	for ip := range r.stash {
		count(ip)
	}
	for ip, c := range r.claims {
		if _, stashed := r.stash[ip]; !stashed && c.service.Namespace == "" {
			count(ip)
		}
	}
	return n
}

func (p *pool) reservedIn(cidr netip.Prefix) int64 {
	var n int64
	for _, s := range p.spec.Reserved {
		if ip, err := netip.ParseAddr(s); err == nil && cidr.Contains(ip) {
			n++
		}
	}
	return n
}

func joinKeys(keys []types.NamespacedName) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.String()
	}
	return strings.Join(s, ", ")
}
