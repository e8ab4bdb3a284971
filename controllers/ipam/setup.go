package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/eventwriter"
)

// +kubebuilder:rbac:groups=ipam.clusterip.dev,resources=clusterippools,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=ipam.clusterip.dev,resources=clusterippools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs;ipaddresses,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Defaults of Options.
const (
	DefaultReservationGracePeriod = 30 * time.Second
	DefaultReadyWait              = 5 * time.Second
	DefaultStashSize              = 128
)

const (
	// claimSweep is how often due claims are deleted when no release wakes the sweep.
	claimSweep = time.Second
	// minClaimLifetime is the shortest a claim lasts when its Service has not been seen: longer
	// than the API server may take from our mutating webhook to storing the Service (two
	// mutating calls and a validating one, each up to its 10 s timeout).
	minClaimLifetime = 30 * time.Second
)

// Options configure ClusterIP assignment; the zero value means the defaults.
type Options struct {
	// DefaultServiceCIDR is the CIDR of the pool "default", created at start when no pool exists
	// and the cluster has no ServiceCIDR "kubernetes" (whose CIDRs win). Flag
	// --default-service-cidr, default allocator.DefaultCIDR (10.96.0.0/12); a comma separates
	// an IPv4 and an IPv6 CIDR.
	DefaultServiceCIDR string
	// ReservationGracePeriod is how long an address the webhook handed out stays reserved for a
	// Service that has not appeared yet (a dry run, or a create the API server rejected after
	// admission). Flag --clusterip-reservation-grace-period, default 30s.
	ReservationGracePeriod time.Duration
	// ReadyWait is how long a webhook request waits for the initial rebuild before it fails
	// (and the API server, by failurePolicy Ignore, assigns the address itself). Flag
	// --clusterip-webhook-ready-wait, default 5s.
	ReadyWait time.Duration
	// ConcurrentServiceSyncs is the number of Services the repair loop mirrors in parallel
	// (default 4). Flag --concurrent-clusterip-syncs.
	ConcurrentServiceSyncs int
	// ClaimNamespace is where the replicas claim each address they hand out (a Lease per
	// address, see claims.go), so that several replicas can serve the webhooks. Empty: no
	// claims, and only one replica may serve the webhooks. Flag --clusterip-claim-namespace,
	// default $POD_NAMESPACE.
	ClaimNamespace string
	// Identity names this replica in its claims; default the host name and a random suffix.
	Identity string
	// StashSize is the most addresses a replica sets aside per pool and family, claimed and
	// checked ahead of admissions, so that the mutating webhook answers without API calls (see
	// stash.go); 0 turns the stash off. Flag --clusterip-stash-size, default 128.
	StashSize *int
}

func (o Options) withDefaults() Options {
	if o.DefaultServiceCIDR == "" {
		o.DefaultServiceCIDR = allocator.DefaultCIDR
	}
	if o.ReservationGracePeriod <= 0 {
		o.ReservationGracePeriod = DefaultReservationGracePeriod
	}
	if o.ReadyWait <= 0 {
		o.ReadyWait = DefaultReadyWait
	}
	if o.ConcurrentServiceSyncs <= 0 {
		o.ConcurrentServiceSyncs = 4
	}
	if o.Identity == "" {
		o.Identity = newIdentity()
	}
	if o.StashSize == nil {
		o.StashSize = ptr.To(DefaultStashSize)
	}
	return o
}

// SetupWithManager registers ClusterIP assignment with mgr: the initial rebuild (which creates
// the default pool when none exists), the repair reconcilers over Services and ClusterIPPools,
// the expiry of stale webhook reservations, both admission webhooks on mgr's webhook server,
// and a readyz check "clusterip-pools" that passes once the pools mirror the cluster.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	_, err := setup(mgr, opts)
	return err
}

// setup is SetupWithManager returning the registry, for tests.
func setup(mgr ctrl.Manager, opts Options) (*Registry, error) {
	opts = opts.withDefaults()
	queue := &poolQueue{}
	var claims *claimWatch
	registry := NewRegistry(opts.ReservationGracePeriod, nil, func(pool string) {
		queue.add(pool)
		if claims != nil {
			claims.wake() // a released address may make a claim due
		}
	})
	// Findings are recorded when they change, each as an Event of its own (see eventwriter).
	events := eventwriter.New(mgr.GetClient(), mgr.GetScheme(), "clusterip-ipam")

	ipAddresses, serviceCIDRs := ipAddressesTracked(mgr), serviceCIDRsServed(mgr)
	var mirror *ipAddressMirror
	if ipAddresses {
		mirror = &ipAddressMirror{informers: mgr.GetCache(), registry: registry}
	}
	init := &initializer{client: mgr.GetClient(), apiReader: mgr.GetAPIReader(), registry: registry,
		events: events, defaultCIDR: opts.DefaultServiceCIDR, ipAddresses: mirror, serviceCIDRs: serviceCIDRs}
	// The webhooks' own API calls: a live read per admission, and with claims a claim per
	// address handed out (and its deletion later).
	live, err := unthrottledClient(mgr)
	if err != nil {
		return nil, err
	}
	if opts.ClaimNamespace != "" {
		claimCache, err := newClaimCache(mgr, opts.ClaimNamespace)
		if err != nil {
			return nil, fmt.Errorf("set up the cache of ClusterIP claims: %w", err)
		}
		claims = &claimWatch{cache: claimCache, every: claimSweep, kick: make(chan struct{}, 1),
			claimer: &claimer{client: live, apiReader: live, namespace: opts.ClaimNamespace, identity: opts.Identity,
				lifetime: max(opts.ReservationGracePeriod, minClaimLifetime), registry: registry, poolOf: registry.PoolOf}}
		if err := mgr.Add(claims); err != nil {
			return nil, fmt.Errorf("add the ClusterIP claims watch: %w", err)
		}
		init.claimsSynced = claims.synced
	}
	if err := mgr.Add(init); err != nil {
		return nil, fmt.Errorf("add the ClusterIP pool rebuild: %w", err)
	}
	// A replica that becomes leader writes every pool's status, even if nothing changes.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return queue.addAll(ctx, registry)
	})); err != nil {
		return nil, fmt.Errorf("add the ClusterIPPool status resync: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("clusterippool").
		// Status updates reconcile too: the status we skip writing because the cache already
		// shows it may be a stale view (right after a watch reconnect); when the cache then
		// catches up to a different status, this event lets us correct it.
		For(&ipamv1alpha1.ClusterIPPool{}).
		WatchesRawSource(source.Func(queue.start)).
		WithOptions(everyReplica).
		Complete(&poolRepair{client: mgr.GetClient(), registry: registry, events: events, elected: mgr.Elected()})
	if err != nil {
		return nil, fmt.Errorf("set up the ClusterIPPool controller: %w", err)
	}
	repair := ctrl.NewControllerManagedBy(mgr).
		Named("clusterip-repair").
		For(&corev1.Service{}, builder.WithPredicates(clusterIPsChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.ConcurrentServiceSyncs, NeedLeaderElection: ptr.To(false)})
	expiry := newReservationExpiry(live, registry, max(opts.ReservationGracePeriod/4, time.Second), ipAddresses)
	if err := mgr.Add(expiry); err != nil {
		return nil, fmt.Errorf("add the ClusterIP reservation expiry: %w", err)
	}
	err = repair.Complete(&serviceRepair{client: mgr.GetClient(), apiReader: mgr.GetAPIReader(), registry: registry, events: events})
	if err != nil {
		return nil, fmt.Errorf("set up the ClusterIP repair controller: %w", err)
	}
	if serviceCIDRs {
		err = ctrl.NewControllerManagedBy(mgr).
			Named("clusterip-servicecidr").
			For(&networkingv1.ServiceCIDR{}).
			WithOptions(everyReplica).
			Complete(&serviceCIDRRepair{client: mgr.GetClient(), registry: registry})
		if err != nil {
			return nil, fmt.Errorf("set up the ServiceCIDR mirror: %w", err)
		}
	}

	if err := mgr.AddReadyzCheck("clusterip-pools", func(*http.Request) error {
		if !isClosed(registry.Ready()) {
			return errors.New("the ClusterIP pools are still being rebuilt from the cluster's Services")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("add the ClusterIP pools ready check: %w", err)
	}

	if ipAddresses {
		if err := mgr.AddReadyzCheck("clusterip-apiserver", apiServerReachable(live)); err != nil {
			return nil, fmt.Errorf("add the API server reachability check: %w", err)
		}
	}

	shared := serviceAdmission{registry: registry, namespaces: mgr.GetClient(), apiReader: mgr.GetAPIReader(),
		live: live, ipAddresses: ipAddresses, reclaim: expiry.reclaim, decoder: admission.NewDecoder(mgr.GetScheme())}
	server := mgr.GetWebhookServer()
	if claims != nil {
		shared.claims = claims.claimer
	}
	if *opts.StashSize > 0 {
		lifetime := max(opts.ReservationGracePeriod, minClaimLifetime)
		var liveIPAddresses client.Reader
		if ipAddresses {
			liveIPAddresses = live
		}
		filler := newStashFiller(registry, liveIPAddresses, shared.claims, lifetime/2)
		registry.EnableStash(*opts.StashSize, filler.taken)
		if err := mgr.Add(filler); err != nil {
			return nil, fmt.Errorf("add the ClusterIP stash: %w", err)
		}
	}
	for path, handler := range map[string]admission.Handler{MutatePath: &MutatingWebhook{shared},
		MutateRetryPath: &MutatingWebhook{shared}, ValidatePath: &ValidatingWebhook{shared}} {
		server.Register(path, failWhileRebuilding(registry, opts.ReadyWait, failableCalls(&webhook.Admission{Handler: handler})))
	}
	return registry, nil
}

// everyReplica runs a controller on every replica, leader or not: each replica serves the
// webhooks, so each one's registry must mirror the cluster.
var everyReplica = controller.Options{NeedLeaderElection: ptr.To(false)}

// clusterIPsChanged passes creations, deletions, and updates that change a Service's ClusterIPs
// or type. Services have no metadata.generation, so GenerationChangedPredicate would drop all.
func clusterIPsChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldSvc, okOld := e.ObjectOld.(*corev1.Service)
			newSvc, okNew := e.ObjectNew.(*corev1.Service)
			return !okOld || !okNew || oldSvc.Spec.Type != newSvc.Spec.Type ||
				!slices.Equal(oldSvc.Spec.ClusterIPs, newSvc.Spec.ClusterIPs)
		},
	}
}

// unthrottledClient reads from and writes to the API server, bypassing the cache, without the
// client-side rate limit of the manager's clients: the webhooks read one IPAddress per admission
// and, with several replicas, create a claim per address they hand out and delete it later. A
// rate limit shared with the controllers (or any client-side limit: a burst of creates needs as
// many claims at once) would queue admissions behind it; kube-apiserver's own allocator writes
// its IPAddress objects without one, and its priority and fairness still applies.
func unthrottledClient(mgr ctrl.Manager) (client.Client, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("create the webhooks' API client: %w", err)
	}
	return c, nil
}

// poolQueue lets the registry enqueue a pool whose counts changed, once the controller runs.
type poolQueue struct {
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[reconcile.Request]]
}

func (p *poolQueue) start(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	p.queue.Store(&q)
	return nil
}

func (p *poolQueue) add(pool string) {
	if q := p.queue.Load(); q != nil {
		(*q).Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: pool}})
	}
}

// addAll enqueues every pool once the registry is ready and the controller runs.
func (p *poolQueue) addAll(ctx context.Context, registry *Registry) error {
	if err := waitReady(ctx, registry); err != nil {
		return nil
	}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return p.queue.Load() != nil, nil
	})
	if err != nil {
		return nil
	}
	for _, name := range registry.PoolNames() {
		p.add(name)
	}
	return nil
}
