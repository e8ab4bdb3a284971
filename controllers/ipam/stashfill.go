package ipam

import (
	"context"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

const (
	// stashRefill is how often the stash is refilled and its old entries given back when no
	// admission wakes the filler.
	stashRefill = 250 * time.Millisecond
	// stashChecksInFlight bounds the entries being claimed and checked at once.
	stashChecksInFlight = 64
	// stashCheckTimeout bounds one entry's claim and live read.
	stashCheckTimeout = 5 * time.Second
)

// stashFiller keeps the registry's stash filled (see stash.go): it claims each address the
// registry sets aside (with several replicas), reads its IPAddress live, and, once an admission
// has handed a stashed address out, names the Service in its claim. It runs on every replica.
type stashFiller struct {
	registry *Registry
	// live reads IPAddress objects; nil when the API server has none (before v1.33).
	live   client.Reader
	claims *claimer // nil with a single replica
	// maxAge is how long a checked entry may wait: below the claim lifetime, so that the other
	// replicas never take the claim for one whose owner died (they wait two lifetimes).
	maxAge     time.Duration
	fill, bind chan struct{}
	inFlight   chan struct{} // a token per check under way
}

func newStashFiller(registry *Registry, live client.Reader, claims *claimer, maxAge time.Duration) *stashFiller {
	return &stashFiller{registry: registry, live: live, claims: claims, maxAge: maxAge,
		fill: make(chan struct{}, 1), bind: make(chan struct{}, 1), inFlight: make(chan struct{}, stashChecksInFlight)}
}

// taken wakes both loops: a stash lost an entry, and its claim must name the Service.
func (f *stashFiller) taken() {
	f.wake(f.fill)
	f.wake(f.bind)
}

func (f *stashFiller) wake(kick chan struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica answers admissions.
func (f *stashFiller) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (f *stashFiller) Start(ctx context.Context) error {
	if err := waitReady(ctx, f.registry); err != nil {
		return nil
	}
	log := logf.FromContext(ctx).WithName("clusterip-stash")
	if f.claims != nil {
		go runEvery(ctx, stashRefill, f.bind, func() { f.bindHandedOut(ctx, log) })
	}
	f.refill(ctx) // at once: the first admissions may come before the first tick
	runEvery(ctx, stashRefill, f.fill, func() { f.refill(ctx) })
	// The replica stops. It hands out no more stashed addresses, names the Services of those it
	// handed out (the other replicas wait for that), and deletes its unused claims now rather
	// than leave them for two lifetimes.
	unused := f.registry.EmptyStash()
	if f.claims == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admissionTimeout)
	defer cancel()
	for len(f.registry.ClaimsToBind()) > 0 && ctx.Err() == nil {
		f.bindHandedOut(ctx, log)
		time.Sleep(10 * time.Millisecond) // a failed patch is tried again, not at once
	}
	for _, ref := range unused {
		if err := f.claims.delete(ctx, ref); err != nil {
			log.Error(err, "Deleting the claim of a stashed ClusterIP failed; the other replicas delete it later")
			break
		}
	}
	return nil
}

// refill starts the checks of the entries the registry sets aside, up to stashChecksInFlight at
// once, and returns once all have started: an entry being checked counts in its stash, so the
// next refill (woken by each check that ends) sets aside only what is still missing.
func (f *stashFiller) refill(ctx context.Context) {
	for _, ip := range f.registry.StashFill(f.maxAge) {
		select {
		case f.inFlight <- struct{}{}:
		case <-ctx.Done():
			f.registry.StashChecked(ip, false)
			continue
		}
		go func() {
			f.check(ctx, ip)
			<-f.inFlight
			f.wake(f.fill)
		}()
	}
}

// check claims ip, then reads its IPAddress live, and tells the registry. The order matters: once
// the claim exists no other replica hands ip out, so an IPAddress absent after it stays absent
// unless the API server assigns ip on its own (which the IPAddress watch then shows). A failed
// call gives the entry back; the next refill sets another aside.
func (f *stashFiller) check(ctx context.Context, ip netip.Addr) {
	ctx, cancel := context.WithTimeout(ctx, stashCheckTimeout)
	defer cancel()
	if f.claims != nil {
		if ok, err := f.claims.stash(ctx, ip); !ok || err != nil {
			f.registry.StashChecked(ip, false)
			return
		}
	}
	if f.live != nil {
		parent, exists, err := liveIPAddress(ctx, f.live, ip)
		if err != nil {
			f.registry.StashChecked(ip, false)
			return
		}
		if exists {
			f.registry.StashHeldBy(ip, parent)
			return
		}
	}
	f.registry.StashChecked(ip, true)
}

// bindHandedOut names the Service in the claim of each stashed address handed out; a failure is
// retried at the next round (the other replicas wait up to bindWait for it, see claimedFor).
func (f *stashFiller) bindHandedOut(ctx context.Context, log logr.Logger) {
	var g errgroup.Group
	g.SetLimit(stashChecksInFlight)
	for _, b := range f.registry.ClaimsToBind() {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(ctx, stashCheckTimeout)
			defer cancel()
			done, err := f.claims.bind(ctx, b)
			if done {
				f.registry.ClaimBound(b)
			}
			if err != nil {
				log.Error(err, "Naming the Service in a ClusterIP claim failed; retrying")
			}
			return nil
		})
	}
	_ = g.Wait()
}
