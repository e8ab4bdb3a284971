package ipam

import (
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Claims let several replicas serve the webhooks: before a replica hands out an address, it
// creates a claim object named after the address (a Lease, see claimer.go), and the API server,
// which refuses a second object of one name, decides which replica gets it. The registry keeps
// the claims it knows of, its own and those other replicas made (seen through a watch or a
// refused create), and counts a claimed address as taken.
//
// A claim outlives the admission it was made for: the replicas learn of a new Service through
// their own watches, a little late and in no fixed order with the claim's deletion, so a claim
// stays until its Service has been held for a claim lifetime (the reservation grace period) or
// its address was released. Its owner deletes it then (DueClaims); a claim whose owner died is
// deleted by any replica once it has been seen for two lifetimes.

// claim is an address claimed through the API server.
type claim struct {
	mine bool // made by this replica (process); otherwise by another one
	// service is the Service the address was claimed for; an empty name stands for a Service
	// with a generated name in that namespace, an empty key for an unknown one.
	service  types.NamespacedName
	deadline time.Time // see DueClaims
	made     time.Time // when this replica recorded it
	uid      types.UID
	// unbound: a claim made for the stash (naming no Service) whose address this replica has
	// handed out; the registry names the Service already, the Lease not yet (ClaimsToBind).
	unbound bool
	// used: a Service or an IPAddress object has held the address since the claim was made,
	// or the admission that made it handed the address out after all.
	used bool
}

func (c claim) isFor(key types.NamespacedName) bool {
	return c.service.Namespace != "" && reservation{service: c.service}.isFor(key)
}

func (c claim) claimant() string {
	if c.service.Namespace == "" {
		return "another Service"
	}
	return "Service " + serviceName(c.service)
}

// ClaimRef names a claim to delete.
type ClaimRef struct {
	IP  netip.Addr
	UID types.UID
}

// Unclaimed returns those of ips reserved for Service key that no claim covers yet: the
// addresses this admission must claim before it hands them out. lost is the first of them that
// a claim for another Service covers by now: another replica claimed it while this admission was
// choosing it (after the registry picked it as free, before the claim). The admission has lost
// it and must not hand it out; claiming it would be refused anyway, and skipping its claim, as
// if the recorded claim were this admission's, would hand out an address another Service is
// being given.
func (r *Registry) Unclaimed(key types.NamespacedName, ips []netip.Addr) (unclaimed []netip.Addr, lost netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range ips {
		res, ok := r.pending[ip]
		if !ok || !res.isFor(key) {
			continue
		}
		c, claimed := r.claims[ip]
		switch {
		case !claimed:
			unclaimed = append(unclaimed, ip)
		case !c.isFor(key) && !lost.IsValid():
			lost = ip
		}
	}
	return unclaimed, lost
}

// RecordClaim records a claim on ip, this replica's (mine, lasting lifetime) or another's
// (seen now; deleted by us only after two lifetimes, when its owner must be gone). A claim
// already known under the same UID keeps its deadline.
func (r *Registry) RecordClaim(ip netip.Addr, service types.NamespacedName, uid types.UID, mine bool, lifetime time.Duration) {
	r.mu.Lock()
	deadline := r.now().Add(lifetime)
	if !mine {
		deadline = r.now().Add(2 * lifetime)
	}
	if cur, ok := r.claims[ip]; ok && cur.uid == uid {
		if !cur.mine && cur.service != service {
			// Another replica handed out an address it had stashed: its claim names the
			// Service now, and lasts a lifetime from there.
			cur.service, cur.deadline = service, deadline
			r.claims[ip] = cur
		}
		r.mu.Unlock()
		return
	}
	r.claims[ip] = claim{mine: mine, service: service, deadline: deadline, made: r.now(), uid: uid}
	var touched []string
	if p, rg := r.ownerLocked(ip); rg != nil {
		_ = rg.Allocate(ip) // ErrAllocated: a Service or reservation has it already
		touched = append(touched, p.name)
	}
	r.mu.Unlock()
	r.notify(touched)
}

// ForgetClaim records that the claim on ip with uid is gone (any UID when uid is empty); the
// address goes back to its pool unless a Service or reservation has it.
func (r *Registry) ForgetClaim(ip netip.Addr, uid types.UID) {
	r.mu.Lock()
	cur, ok := r.claims[ip]
	if !ok || (uid != "" && cur.uid != uid) {
		r.mu.Unlock()
		return
	}
	delete(r.claims, ip)
	if cur.mine {
		r.forgetStashedLocked(ip) // its claim is gone: no longer ours to hand out
	}
	r.settleLocked(ip)
	var touched []string
	if p, _ := r.ownerLocked(ip); p != nil {
		touched = append(touched, p.name)
	}
	r.mu.Unlock()
	r.notify(touched)
}

// AbandonClaims records that the admission which claimed ips did not hand them out (it could not
// claim all it needed): this replica's claims on them are due once nothing else holds them.
func (r *Registry) AbandonClaims(ips []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range ips {
		r.giveBackClaimLocked(ip)
	}
}

// YieldToClaim drops a reservation of ip for a Service other than key: the API server's claim
// gives ip to key (the reservation was this replica's stale view).
func (r *Registry) YieldToClaim(ip netip.Addr, key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res, ok := r.pending[ip]; ok && !res.isFor(key) {
		delete(r.pending, ip)
		r.settleLocked(ip)
	}
}

// DueClaims returns the claims to delete now: this replica's whose address was used and is free
// again (its Service is gone), or whose deadline passed while no reservation waits for it (the
// Service holds it by then, or its create never completed); and other replicas' past their
// deadline (their owner is gone). A claim whose Service nobody has seen yet stays until its
// deadline, however long the API server takes to store the Service: deleting it earlier would
// let another replica, whose caches may lag, hand the address out again.
func (r *Registry) DueClaims() (mine, stale []ClaimRef) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for ip, c := range r.claims {
		expired := now.After(c.deadline)
		if !c.mine {
			if expired {
				stale = append(stale, ClaimRef{IP: ip, UID: c.uid})
			}
			continue
		}
		_, reserved := r.pending[ip]
		_, stashed := r.stash[ip]
		if reserved || stashed {
			continue
		}
		_, held := r.holders[ip]
		_, recorded := r.ipAddresses[ip]
		if expired || (c.used && !held && !recorded) {
			mine = append(mine, ClaimRef{IP: ip, UID: c.uid})
		}
	}
	byIP := func(a, b ClaimRef) int { return a.IP.Compare(b.IP) }
	slices.SortFunc(mine, byIP)
	slices.SortFunc(stale, byIP)
	return mine, stale
}

// Claims returns the number of claims the registry knows of, its own and others'.
func (r *Registry) Claims() (mine, others int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.claims {
		if c.mine {
			mine++
		} else {
			others++
		}
	}
	return mine, others
}

// PoolOf returns the name of the pool that owns ip, or "" when none does.
func (r *Registry) PoolOf(ip netip.Addr) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, _ := r.ownerLocked(ip); p != nil {
		return p.name
	}
	return ""
}
