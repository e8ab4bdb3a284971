package ipam

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/allocator"
)

// The stash takes the API calls off the mutating webhook's path. Before an admission may hand
// out a dynamic address, the address must be claimed (with several replicas) and the API server
// must have no IPAddress object for it; both are API calls, which a burst of creates queues
// behind each other. The registry therefore sets aside a few free addresses per pool and family
// ahead of time (StashFill); the stash filler claims each one, then reads its IPAddress live, and
// only then marks it ready (StashChecked). An admission takes a ready one with no API call; the
// filler refills behind it. The checks keep what they proved because every other replica must
// claim an address before handing it out, and the IPAddress watch drops a stashed address the
// moment an object for it shows up (an address the API server assigned itself while our webhook
// was unreachable). Entries older than a maximum age are given back and set aside anew, so that
// no check is older than that, and no claim outlives what the other replicas allow it.
//
// The stash of a pool and family grows while admissions find it empty and shrinks while entries
// age unused; a range sets aside at most one address per stashFreePerEntry free ones, so a small
// or nearly full pool has none (its admissions take the path with the API calls), and a requested
// address is rarely one another replica has set aside.

const (
	stashMinSize = 2
	// stashFreePerEntry: a range sets aside at most one address per this many free ones.
	stashFreePerEntry = 1024
)

// stashKey names the stash of one pool and family.
type stashKey struct {
	pool   string
	family allocator.Family
}

// stashEntry is an address set aside for the next admissions.
type stashEntry struct {
	key   stashKey
	ready bool      // claimed and checked: may be handed out
	since time.Time // when it was checked (set aside, while not ready)
}

// EnableStash lets the registry set aside up to max addresses per pool and family (see
// StashFill). taken (may be nil) is called when an admission took one, with the lock held: it must neither
// block nor call the registry.
func (r *Registry) EnableStash(max int, taken func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stashMax = max
	if taken != nil {
		r.stashTaken = taken
	}
}

// StashFill gives back the ready entries older than maxAge and those of ranges now short of free
// addresses, and sets aside what each stash lacks. It returns the new entries: each must be
// claimed and checked, then reported with StashChecked, before it is handed out.
func (r *Registry) StashFill(maxAge time.Duration) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stashMax <= 0 {
		return nil
	}
	now := r.now()
	count := map[stashKey]int{}
	shrunk := map[stashKey]bool{}
	for _, ip := range slices.SortedFunc(maps.Keys(r.stash), netip.Addr.Compare) {
		e := r.stash[ip]
		if e.ready && now.Sub(e.since) > maxAge {
			r.unstashLocked(ip)
			if !shrunk[e.key] {
				r.stashSize[e.key] = max(r.stashSize[e.key]/2, stashMinSize)
				shrunk[e.key] = true
			}
			continue
		}
		count[e.key]++
	}
	var fresh []netip.Addr
	for _, name := range slices.Sorted(maps.Keys(r.pools)) {
		p := r.pools[name]
		if p.invalid != "" || (p.spec.QuarantineSeconds != nil && *p.spec.QuarantineSeconds > 0) {
			continue
		}
		for _, f := range p.families() {
			key := stashKey{pool: name, family: f}
			_, rg, err := p.rangeFor(f)
			if err != nil || rg.Free()/stashFreePerEntry == 0 {
				r.unstashAllLocked(key)
				continue
			}
			want := min(max(r.stashSize[key], stashMinSize), r.stashMax, int(min(rg.Free()/stashFreePerEntry, uint64(r.stashMax))))
			for ; count[key] < want; count[key]++ {
				ip, err := r.allocateNextLocked(p, f)
				if err != nil {
					break
				}
				r.stash[ip] = stashEntry{key: key, since: now}
				fresh = append(fresh, ip)
			}
		}
	}
	return fresh
}

// StashChecked records the outcome of a new entry's checks: ok, it may be handed out from now
// on; otherwise it is given back (an address another replica claimed or an IPAddress object
// holds stays taken through that record).
func (r *Registry) StashChecked(ip netip.Addr, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, found := r.stash[ip]
	if !found {
		// Dropped while it was being checked (a rebuild, or the replica stops): a claim the
		// check made is due at once.
		if r.claims[ip].service.Namespace == "" {
			r.giveBackClaimLocked(ip)
		}
		return
	}
	if e.ready {
		return
	}
	if !ok {
		r.unstashLocked(ip)
		return
	}
	e.ready, e.since = true, r.now()
	r.stash[ip] = e
	r.stashReady[e.key] = append(r.stashReady[e.key], ip)
}

// StashHeldBy records that a new entry's live check found an IPAddress object naming parent:
// the address is given back, and stays reserved for parent until the IPAddress watch shows the
// object (or the reservation expires), as YieldReservation does.
func (r *Registry) StashHeldBy(ip netip.Addr, parent types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, found := r.stash[ip]; !found {
		return
	}
	if _, recorded := r.ipAddresses[ip]; !recorded {
		if _, pending := r.pending[ip]; !pending {
			r.pending[ip] = reservation{service: parent, deadline: r.now().Add(r.grace)}
		}
	}
	r.unstashLocked(ip)
}

// Stashed returns the number of ready entries and of those being checked.
func (r *Registry) Stashed() (ready, checking int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.stash {
		if e.ready {
			ready++
		} else {
			checking++
		}
	}
	return ready, checking
}

// takeStashedLocked hands the oldest ready entry of p and f to Service key: its claim (if any)
// is this Service's from now on, and waits to say so in the API server (ClaimsToBind). When the
// stash is empty it grows for the next time.
func (r *Registry) takeStashedLocked(p *pool, f allocator.Family, key types.NamespacedName) (netip.Addr, bool) {
	if r.stashMax <= 0 {
		return netip.Addr{}, false
	}
	sk := stashKey{pool: p.name, family: f}
	ready := r.stashReady[sk]
	stashTakes.WithLabelValues(strconv.FormatBool(len(ready) > 0)).Inc()
	if len(ready) == 0 {
		r.stashSize[sk] = min(2*max(r.stashSize[sk], stashMinSize), r.stashMax)
		return netip.Addr{}, false
	}
	ip := ready[0]
	r.handOutStashedLocked(ip, key)
	return ip, true
}

// handOutStashedLocked takes ip out of the stash for Service key: it stays marked, and its claim
// (if any) is key's from now on and waits to say so in the API server (ClaimsToBind).
func (r *Registry) handOutStashedLocked(ip netip.Addr, key types.NamespacedName) {
	e := r.stash[ip]
	delete(r.stash, ip)
	if i := slices.Index(r.stashReady[e.key], ip); i >= 0 {
		r.stashReady[e.key] = slices.Delete(r.stashReady[e.key], i, i+1)
	}
	if c, ok := r.claims[ip]; ok && c.mine {
		c.service, c.unbound = key, true
		c.deadline = r.now().Add(c.deadline.Sub(c.made)) // a claim lifetime from the hand-out
		r.claims[ip] = c
	}
	r.stashTaken()
}

// unstashLocked removes ip from the stash; this replica's claim on it is due once nothing else
// holds the address.
func (r *Registry) unstashLocked(ip netip.Addr) {
	if r.forgetStashedLocked(ip) {
		r.settleLocked(ip)
	}
}

// forgetStashedLocked removes ip from the stash without settling it, and says whether it was
// there.
func (r *Registry) forgetStashedLocked(ip netip.Addr) bool {
	e, ok := r.stash[ip]
	if !ok {
		return false
	}
	delete(r.stash, ip)
	if i := slices.Index(r.stashReady[e.key], ip); i >= 0 {
		r.stashReady[e.key] = slices.Delete(r.stashReady[e.key], i, i+1)
	}
	r.giveBackClaimLocked(ip)
	return true
}

// unstashAllLocked gives back the ready entries of one stash.
func (r *Registry) unstashAllLocked(key stashKey) {
	for _, ip := range slices.Clone(r.stashReady[key]) {
		r.unstashLocked(ip)
	}
}

// dropStashLocked empties the stash before the bitmaps are rebuilt: the pools may have changed
// under it. Entries still being checked are dropped too; their check's outcome is ignored.
func (r *Registry) dropStashLocked() {
	for ip := range r.stash {
		r.giveBackClaimLocked(ip)
	}
	clear(r.stash)
	clear(r.stashReady)
}

// EmptyStash gives back every entry (the replica stops) and returns this replica's claims on
// them, to delete: the other replicas would otherwise keep those addresses for two claim
// lifetimes.
func (r *Registry) EmptyStash() []ClaimRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	var refs []ClaimRef
	for _, ip := range slices.SortedFunc(maps.Keys(r.stash), netip.Addr.Compare) {
		if c, ok := r.claims[ip]; ok && c.mine {
			refs = append(refs, ClaimRef{IP: ip, UID: c.uid})
		}
		r.unstashLocked(ip)
	}
	r.stashMax = 0
	return refs
}

// giveBackClaimLocked records that this replica does not hand ip out after all: its claim on ip,
// if any, names no Service to bind and is due once nothing else holds the address (DueClaims).
func (r *Registry) giveBackClaimLocked(ip netip.Addr) {
	if c, ok := r.claims[ip]; ok && c.mine {
		c.used, c.unbound = true, false
		r.claims[ip] = c
	}
}

// ClaimBinding is a claim on a stashed address that was handed out: its Lease must name the
// Service now.
type ClaimBinding struct {
	IP      netip.Addr
	UID     types.UID
	Service types.NamespacedName
}

// ClaimsToBind returns this replica's claims whose Lease does not name their Service yet.
func (r *Registry) ClaimsToBind() []ClaimBinding {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ClaimBinding
	for ip, c := range r.claims {
		if c.mine && c.unbound {
			out = append(out, ClaimBinding{IP: ip, UID: c.uid, Service: c.service})
		}
	}
	slices.SortFunc(out, func(a, b ClaimBinding) int { return a.IP.Compare(b.IP) })
	return out
}

// ClaimBound records that the claim's Lease names its Service (or is gone).
func (r *Registry) ClaimBound(b ClaimBinding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.claims[b.IP]; ok && c.uid == b.UID {
		c.unbound = false
		r.claims[b.IP] = c
	}
}

// Unchecked returns those of ips reserved for key that did not come from the stash: their
// IPAddress must still be read live before they are handed out.
func (r *Registry) Unchecked(key types.NamespacedName, ips []netip.Addr) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []netip.Addr
	for _, ip := range ips {
		if res, ok := r.pending[ip]; !ok || !res.isFor(key) || !res.checked {
			out = append(out, ip)
		}
	}
	return out
}
