package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// serviceRepair mirrors one Service's ClusterIPs into the registry.
type serviceRepair struct {
	client    client.Client
	apiReader client.Reader // live reads of IPAddresses
	registry  *Registry
	events    events.EventRecorder
}

// Reconcile implements reconcile.Reconciler.
func (s *serviceRepair) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if err := waitReady(ctx, s.registry); err != nil {
		return ctrl.Result{}, err
	}
	svc := &corev1.Service{}
	if err := s.client.Get(ctx, req.NamespacedName, svc); err != nil {
		if apierrors.IsNotFound(err) {
			// Its addresses stay held while the API server's IPAddress objects for them exist.
			s.registry.Observe(req.NamespacedName, nil, nil)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	nsLabels, err := namespaceLabels(ctx, s.client, s.apiReader, svc.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	adopt(s.registry, s.events, svc, nsLabels)
	return ctrl.Result{}, nil
}

// adopt records a Service's ClusterIPs and tells the user what is wrong with them.
func adopt(registry *Registry, recorder events.EventRecorder, svc *corev1.Service, nsLabels labels.Set) {
	ips, _ := clusterIPsOf(svc) // a malformed IP never passes the API server's validation
	for _, f := range registry.Observe(client.ObjectKeyFromObject(svc), ips, nsLabels) {
		allocationErrors.WithLabelValues(f.Pool, f.Reason).Inc()
		recorder.Eventf(svc, nil, corev1.EventTypeWarning, f.Reason, "AdoptClusterIP", "%s", f.Message)
	}
}

// namespaceLabels returns the labels of namespace name, read from the cache, or live when the
// cache has not seen it yet: a Service created a moment after its namespace must still draw from
// the pools the namespace's labels select.
func namespaceLabels(ctx context.Context, cache, live client.Reader, name string) (labels.Set, error) {
	ns := &corev1.Namespace{}
	err := cache.Get(ctx, types.NamespacedName{Name: name}, ns)
	if apierrors.IsNotFound(err) {
		err = live.Get(ctx, types.NamespacedName{Name: name}, ns)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func waitReady(ctx context.Context, registry *Registry) error {
	select {
	case <-registry.Ready():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poolRepair applies a pool's spec to the registry and keeps its status and metrics current.
// It runs on every replica; only the leader writes status.
type poolRepair struct {
	client   client.Client
	registry *Registry
	events   events.EventRecorder
	elected  <-chan struct{}
}

// Reconcile implements reconcile.Reconciler.
func (p *poolRepair) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if err := waitReady(ctx, p.registry); err != nil {
		return ctrl.Result{}, err
	}
	pool := &ipamv1alpha1.ClusterIPPool{}
	if err := p.client.Get(ctx, req.NamespacedName, pool); err != nil {
		if apierrors.IsNotFound(err) {
			p.registry.DeletePool(req.Name)
			forgetPoolMetrics(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	p.registry.SetPool(pool)
	st, ok := p.registry.Status(pool.Name, pool.Generation, pool.Status.Conditions)
	if !ok {
		return ctrl.Result{}, nil
	}
	recordPoolMetrics(pool.Name, st)
	var result ctrl.Result
	if q := pool.Spec.QuarantineSeconds; q != nil && *q > 0 && meta.IsStatusConditionTrue(st.Status.Conditions, ipamv1alpha1.ConditionExhausted) {
		result.RequeueAfter = time.Duration(*q) * time.Second // addresses leave quarantine without an event
	}
	if equality.Semantic.DeepEqual(pool.Status, st.Status) || !isClosed(p.elected) {
		return result, nil
	}
	if c := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs); c != nil &&
		c.Status == metav1.ConditionTrue && !meta.IsStatusConditionTrue(pool.Status.Conditions, c.Type) {
		p.events.Eventf(pool, nil, corev1.EventTypeWarning, c.Reason, "AllocateClusterIP", "%s", c.Message)
	}
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Status = st.Status
	if err := p.client.Status().Patch(ctx, pool, patch); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("patch status of pool %s: %w", pool.Name, err)
	}
	return result, nil
}

// initializer creates the default pool when there is none, then rebuilds every pool's bitmap
// from the Services in the cache before the webhooks answer. It runs on every replica.
type initializer struct {
	client       client.Client // the manager's: reads from the cache once it has synced
	apiReader    client.Reader
	registry     *Registry
	events       events.EventRecorder
	defaultCIDR  string
	ipAddresses  *ipAddressMirror // nil unless ipAddressesTracked
	serviceCIDRs bool             // see serviceCIDRsServed
	// claimsSynced waits until the other replicas' claims are known (nil without claims).
	claimsSynced func(context.Context) bool
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica serves webhooks.
func (i *initializer) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (i *initializer) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("clusterip-ipam")
	if i.claimsSynced != nil && !i.claimsSynced(ctx) {
		return nil // the context ended first
	}
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Cap: 10 * time.Second, Steps: 1 << 30},
		func(ctx context.Context) (bool, error) {
			if err := i.rebuild(ctx); err != nil {
				log.Error(err, "Rebuilding the ClusterIP pools failed; retrying")
				return false, nil
			}
			return true, nil
		})
	if err != nil {
		return nil // the context ended first
	}
	log.Info("ClusterIP pools rebuilt from the cluster's Services", "pools", i.registry.PoolNames())
	i.registry.MarkReady()
	<-ctx.Done()
	return nil
}

func (i *initializer) rebuild(ctx context.Context) error {
	pools := &ipamv1alpha1.ClusterIPPoolList{}
	if err := i.client.List(ctx, pools); err != nil {
		return fmt.Errorf("list ClusterIPPools: %w", err)
	}
	if len(pools.Items) == 0 {
		pool, err := i.createDefaultPool(ctx)
		if err != nil {
			return err
		}
		pools.Items = append(pools.Items, *pool)
	}
	i.registry.SetPools(pools.Items)
	if i.serviceCIDRs {
		cidrs, err := listServiceCIDRs(ctx, i.client)
		if err != nil {
			return err
		}
		i.registry.SetServiceCIDRs(cidrs)
	}
	if i.ipAddresses != nil {
		if err := i.ipAddresses.sync(ctx); err != nil {
			return err
		}
	}

	namespaces := &corev1.NamespaceList{}
	if err := i.client.List(ctx, namespaces); err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	nsLabels := map[string]labels.Set{}
	for _, ns := range namespaces.Items {
		nsLabels[ns.Name] = ns.Labels
	}
	services := &corev1.ServiceList{}
	if err := i.client.List(ctx, services); err != nil {
		return fmt.Errorf("list Services: %w", err)
	}
	for idx := range services.Items {
		svc := &services.Items[idx]
		adopt(i.registry, i.events, svc, nsLabels[svc.Namespace])
	}
	return nil
}

// createDefaultPool creates the pool "default" for the cluster's Service range: the CIDRs of the
// ServiceCIDR "kubernetes" when the API has it, else the configured default.
func (i *initializer) createDefaultPool(ctx context.Context) (*ipamv1alpha1.ClusterIPPool, error) {
	var cidrs []string
	for _, c := range strings.Split(i.defaultCIDR, ",") {
		cidrs = append(cidrs, strings.TrimSpace(c))
	}
	sc := &networkingv1.ServiceCIDR{}
	switch err := i.apiReader.Get(ctx, types.NamespacedName{Name: "kubernetes"}, sc); {
	case err == nil && len(sc.Spec.CIDRs) > 0:
		cidrs = slices.Clone(sc.Spec.CIDRs)
	case err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err):
		return nil, fmt.Errorf("read ServiceCIDR kubernetes: %w", err)
	}
	pool := &ipamv1alpha1.ClusterIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: ipamv1alpha1.DefaultPoolName},
		Spec:       ipamv1alpha1.ClusterIPPoolSpec{CIDRs: cidrs},
	}
	if err := i.client.Create(ctx, pool); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the default ClusterIPPool for %v: %w", cidrs, err)
		}
		if err := i.apiReader.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
			return nil, fmt.Errorf("read ClusterIPPool %s: %w", pool.Name, err)
		}
	}
	return pool, nil
}

// reservationExpiry frees webhook reservations whose Service never appeared.
type reservationExpiry struct {
	apiReader   client.Reader
	registry    *Registry
	every       time.Duration
	ipAddresses bool // see ipAddressesTracked
	// reclaiming admits one reclaim pass at a time; passes counts the passes done, so that a
	// webhook that waited for one does not start another over what it just checked.
	reclaiming chan struct{}
	passes     atomic.Uint64
	lastErr    error // of the last reclaim pass; read and written holding reclaiming
}

func newReservationExpiry(apiReader client.Reader, registry *Registry, every time.Duration, ipAddresses bool) *reservationExpiry {
	return &reservationExpiry{apiReader: apiReader, registry: registry, every: every, ipAddresses: ipAddresses,
		reclaiming: make(chan struct{}, 1)}
}

// Start implements manager.Runnable.
func (e *reservationExpiry) Start(ctx context.Context) error {
	if err := waitReady(ctx, e.registry); err != nil {
		return nil
	}
	runEvery(ctx, e.every, nil, func() { e.expire(ctx) })
	return nil
}

// runEvery calls fn every period, and at once when kick (may be nil) receives, until ctx ends.
func runEvery(ctx context.Context, period time.Duration, kick <-chan struct{}, fn func()) {
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-kick:
		}
		fn()
	}
}

// expire drops each expired reservation unless a Service does hold the address (the repair loop
// has just not seen it yet) or the API server has an IPAddress for it (a create still in flight).
func (e *reservationExpiry) expire(ctx context.Context) {
	_ = e.dropUnheld(ctx, e.registry.ExpiredReservations()) // logged; the next tick tries again
}

// reclaimAge is how old a reservation our validating webhook has not seen must be before a
// webhook that finds its pool full checks it live: longer than kube-apiserver takes from our
// mutating webhook to creating the IPAddress.
const reclaimAge = 2 * time.Second

// reclaim checks live the reservations that our validating webhook has seen or that are older
// than reclaimAge, and drops those nothing holds. The webhook calls it when a pool is full:
// reservations normally end when their IPAddress comes and goes, but while the watches are down
// (for many seconds after an API server restart, in their reconnect backoff) the objects of
// Services created and deleted meanwhile are never seen, and their reservations would wait for
// the grace period, so that churn fills a half-empty pool (on a fast machine, within reclaimAge).
// Many admissions find the pool full at once: one pass runs at a time, and an admission that
// waited for a pass only retries its assignment; the wait ends with ctx. It returns why the
// pass could not check the reservations, if it could not: the pool may then only look full.
func (e *reservationExpiry) reclaim(ctx context.Context) error {
	before := e.passes.Load()
	select {
	case e.reclaiming <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-e.reclaiming }()
	if e.passes.Load() != before {
		return e.lastErr // a pass ended while we waited: it dropped what ours would drop
	}
	e.lastErr = e.dropUnheld(ctx, e.registry.ReservationsToReclaim(reclaimAge, e.ipAddresses))
	e.passes.Add(1)
	return e.lastErr
}

// dropUnheld drops those of reservations nothing in the cluster holds. It reads the cluster in
// a few lists, not an object per reservation: after an API server restart there are hundreds,
// and an admission waits for the check. It returns why the check failed, if it did.
func (e *reservationExpiry) dropUnheld(ctx context.Context, reservations []Reservation) error {
	if len(reservations) == 0 {
		return nil
	}
	log := logf.FromContext(ctx).WithName("clusterip-ipam")
	held, err := e.heldInCluster(ctx, reservations)
	if err != nil {
		log.Error(err, "Checking old ClusterIP reservations failed; they stay until the next check", "reservations", len(reservations))
		return fmt.Errorf("%d addresses reserved for creates that may never have completed could not be checked against the API server (%w)", len(reservations), err)
	}
	for _, res := range reservations {
		if !held[res.IP] {
			log.V(1).Info("Freeing a ClusterIP reserved for a Service that never appeared", "ip", res.IP, "service", res.Service)
			e.registry.DropReservation(res)
		}
	}
	return nil
}

// heldInCluster returns the addresses of reservations that the API server has an IPAddress
// object for (a create still in flight, or any other holder), or that their Service holds.
func (e *reservationExpiry) heldInCluster(ctx context.Context, reservations []Reservation) (map[netip.Addr]bool, error) {
	held := map[netip.Addr]bool{}
	if e.ipAddresses {
		records := &networkingv1.IPAddressList{}
		if err := e.apiReader.List(ctx, records); err != nil {
			return nil, fmt.Errorf("list IPAddresses: %w", err)
		}
		for _, r := range records.Items {
			if ip, err := netip.ParseAddr(r.Name); err == nil {
				held[ip.Unmap()] = true
			}
		}
	}
	namespaces := map[string]bool{}
	for _, res := range reservations {
		if !held[res.IP] {
			namespaces[res.Service.Namespace] = true
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(namespaces)) {
		services := &corev1.ServiceList{}
		if err := e.apiReader.List(ctx, services, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list the Services of namespace %s: %w", ns, err)
		}
		holders := map[netip.Addr][]types.NamespacedName{}
		for idx := range services.Items {
			ips, _ := clusterIPsOf(&services.Items[idx])
			for _, ip := range ips {
				holders[ip] = append(holders[ip], client.ObjectKeyFromObject(&services.Items[idx]))
			}
		}
		for _, res := range reservations {
			if res.Service.Namespace == ns && slices.ContainsFunc(holders[res.IP], reservation{service: res.Service}.isFor) {
				held[res.IP] = true
			}
		}
	}
	return held, nil
}
