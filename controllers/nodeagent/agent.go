// Package nodeagent runs the datapath on a node: it records every Service and its
// EndpointSlices in the node's Datapath (datapath.Proxier, wired by main.go) as they change, and
// applies the changes in batches no closer together than a minimum sync period. It does not
// import the kernel-facing datapath package: a control loop depends on the Datapath interface.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-clusterip/kube-clusterip/proxysync"
)

// Options tune the agent.
type Options struct {
	// MinSyncPeriod is the shortest time between two nftables transactions; changes inside
	// it are applied together.
	MinSyncPeriod time.Duration
	// MaxConsecutiveFailures is how many failed syncs in a row make /healthz fail.
	MaxConsecutiveFailures int
}

// Datapath is what the agent needs of the node's datapath (datapath.Proxier is one): it records
// each Service with its EndpointSlices, programs them all at once or the changes since the last
// sync, follows the node's zone, and reports how its syncs go.
type Datapath interface {
	// Update records a Service (nil: deleted) and its slices for the next Apply, and tells
	// whether they differ from what was recorded.
	Update(key types.NamespacedName, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) bool
	// Sync programs exactly services and slices, replacing all recorded before.
	Sync(ctx context.Context, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) error
	// Apply programs the changes recorded since the last sync.
	Apply(ctx context.Context) error
	// Run does the datapath's own maintenance (periodic full syncs, retries) until ctx ends.
	Run(ctx context.Context)
	// SetZone sets the node's zone for topology hints; true when it changed.
	SetZone(zone string) bool
	// SetServiceCIDRs sets the ranges whose unallocated addresses are dropped; true when they
	// changed.
	SetServiceCIDRs(cidrs []string) bool
	// Stats summarises the sync attempts so far.
	Stats() proxysync.Stats
}

// Agent is the reconciler that keeps the node's nftables in step with the cluster.
type Agent struct {
	Client  client.Client
	Proxier Datapath
	Options Options
	// NodeName is the node the agent runs on. Its Node's label topology.kubernetes.io/zone
	// is the zone whose endpoints topology hints prefer; it is watched and followed, and so
	// is whether the Node is being deleted (Health). Empty: the zone stays what the Proxier
	// was configured with.
	NodeName string
	// ProxyName is the value of the label service.kubernetes.io/service-proxy-name of the
	// Services this agent serves. Empty: those without the label, as kube-proxy (the agent
	// replaces it); set: only those labelled with it (the agent runs beside kube-proxy).
	ProxyName string
	// Health, when set, is told of every queued update and successful sync (port 10256).
	Health *ProxyHealth
	// HealthzAddress is where Health answers /healthz and /livez (kube-proxy: 0.0.0.0:10256);
	// empty: not served.
	HealthzAddress string
	// ServiceHealth, when set, serves the healthCheckNodePorts of the Services.
	ServiceHealth *ServiceHealthServers
	// FallbackServiceCIDRs are the Service CIDRs used while the cluster has no ServiceCIDR
	// objects (or an API server without them).
	FallbackServiceCIDRs []string
	// Recorder, when set, records a Normal Event Starting on the Node when the agent starts,
	// as kube-proxy does, so that `kubectl describe node` shows when the proxy (re)started.
	Recorder events.EventRecorder

	// synced is closed once the first full sync from the complete caches is done.
	synced  chan struct{}
	pending chan struct{} // holds one token when an Apply is wanted

	mu             sync.Mutex
	endpoints      map[types.NamespacedName]int // endpoints given to the Proxier, per Service
	endpointsTotal int                          // the sum of endpoints
	// triggers are the slices' last-change-trigger-times not yet applied, and the last one
	// recorded per slice (a trigger time is observed once).
	triggers     []triggerTime
	lastTriggers map[types.NamespacedName]string
	startedAt    time.Time // trigger times before it are not observed
}

// triggerTime is a slice's endpoints.kubernetes.io/last-change-trigger-time.
type triggerTime struct {
	family corev1.IPFamily
	at     time.Time
}

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=get;list;watch

// Reconcile records one Service, with its EndpointSlices, in the Proxier and asks for an
// Apply; a Service that is gone is removed.
func (a *Agent) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	svc := &corev1.Service{}
	err := a.Client.Get(ctx, req.NamespacedName, svc)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("get service %s: %w", req.NamespacedName, err)
	}
	if apierrors.IsNotFound(err) || !a.serves(svc) {
		changed := a.Proxier.Update(req.NamespacedName, nil, nil)
		a.record(req.NamespacedName, nil, changed)
		a.setServiceHealth(ctx, req.NamespacedName, 0, 0)
		a.requestApplyIf(changed)
		return reconcile.Result{}, nil
	}
	// The Proxier keeps the slices and never modifies them, so the cache's own copies serve.
	var list discoveryv1.EndpointSliceList
	err = a.Client.List(ctx, &list, client.InNamespace(req.Namespace),
		client.MatchingFields{sliceServiceIndex: req.Name}, client.UnsafeDisableDeepCopy)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("list endpointslices of service %s: %w", req.NamespacedName, err)
	}
	slices := make([]*discoveryv1.EndpointSlice, 0, len(list.Items))
	for i := range list.Items {
		if ProxiedBy(&list.Items[i], a.ProxyName) {
			slices = append(slices, &list.Items[i])
		}
	}
	changed := a.Proxier.Update(req.NamespacedName, svc, slices)
	a.record(req.NamespacedName, slices, changed)
	a.setServiceHealth(ctx, req.NamespacedName, HealthCheckNodePort(svc), LocalReadyEndpoints(svc, slices, a.NodeName))
	a.requestApplyIf(changed)
	return reconcile.Result{}, nil
}

// sliceServiceIndex indexes EndpointSlices by their Service's name: a Service's slices are
// then found without matching the labels of every slice in its namespace (10 ms per change
// with 10k Services in one namespace).
const sliceServiceIndex = "nodeagent.kube-clusterip/service-name"

// serves tells whether the agent programs svc: not headless (kube-proxy leaves those to
// DNS) and labelled for this proxy.
func (a *Agent) serves(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != corev1.ClusterIPNone && ProxiedBy(svc, a.ProxyName)
}

// ProxiedBy tells whether a proxy named proxyName serves obj (a Service or EndpointSlice):
// the label service.kubernetes.io/service-proxy-name must be absent when proxyName is
// empty (kube-proxy's rule) and equal to proxyName otherwise. Headless slices never are.
func ProxiedBy(obj metav1.Object, proxyName string) bool {
	if _, headless := obj.GetLabels()[corev1.IsHeadlessService]; headless {
		return false
	}
	value, labelled := obj.GetLabels()[LabelServiceProxyName]
	if proxyName == "" {
		return !labelled
	}
	return labelled && value == proxyName
}

// LabelServiceProxyName names the proxy that should serve a Service and its slices.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

func (a *Agent) setServiceHealth(ctx context.Context, key types.NamespacedName, port int32, localEndpoints int) {
	if a.ServiceHealth == nil {
		return
	}
	if err := a.ServiceHealth.Set(key, port, localEndpoints); err != nil {
		log.FromContext(ctx).Error(err, "cannot serve the Service's health check for its load balancer", "service", key)
	}
}

// record keeps the gauges of what the datapath was given.
func (a *Agent) record(key types.NamespacedName, slices []*discoveryv1.EndpointSlice, changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endpointsTotal -= a.endpoints[key]
	if slices == nil {
		delete(a.endpoints, key)
	} else {
		n := 0
		for _, s := range slices {
			n += len(s.Endpoints)
			if changed {
				a.noteTrigger(s)
			}
		}
		a.endpoints[key] = n
		a.endpointsTotal += n
	}
	servicesProgrammed.Set(float64(len(a.endpoints)))
	endpointsProgrammed.Set(float64(a.endpointsTotal))
}

// noteTrigger queues the slice's last-change-trigger-time for the network programming
// latency, once per value and, as kube-proxy, only for changes made after the agent
// started: the slices the first sync programs would report their age.
func (a *Agent) noteTrigger(s *discoveryv1.EndpointSlice) {
	value := s.Annotations[corev1.EndpointsLastChangeTriggerTime]
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	if value == "" || a.lastTriggers[key] == value {
		return
	}
	a.lastTriggers[key] = value
	at, err := time.Parse(time.RFC3339Nano, value)
	if err != nil || !at.After(a.startedAt) {
		return
	}
	family := corev1.IPv4Protocol
	if s.AddressType == discoveryv1.AddressTypeIPv6 {
		family = corev1.IPv6Protocol
	}
	a.triggers = append(a.triggers, triggerTime{family: family, at: at})
}

// observeProgrammed records the network programming latency of the trigger times queued
// before a successful sync.
func (a *Agent) observeProgrammed(now time.Time) {
	a.mu.Lock()
	triggers := a.triggers
	a.triggers = nil
	a.mu.Unlock()
	for _, t := range triggers {
		networkProgrammingDuration.WithLabelValues(string(t.family)).Observe(now.Sub(t.at).Seconds())
	}
}

// requestApplyIf asks for an Apply when the Datapath's record changed. The cache's initial
// list replays every Service the first sync programmed; those would otherwise keep the
// sync loop busy, and a real change would wait up to MinSyncPeriod behind them.
func (a *Agent) requestApplyIf(changed bool) {
	if changed {
		a.requestApply()
	}
}

func (a *Agent) requestApply() {
	if a.Health != nil {
		a.Health.QueuedUpdate()
	}
	for _, family := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		lastQueuedSync.WithLabelValues(string(family)).SetToCurrentTime()
	}
	select {
	case a.pending <- struct{}{}:
	default: // an Apply is already wanted; it will include this change
	}
}

// Start is the agent's sync loop: one full sync once the caches are complete (so no
// Service is missing from the first ruleset, which would drop its traffic), then an
// Apply per batch of changes, paced by newSyncPacer. Failed syncs are retried by the
// Proxier's maintenance as full syncs; the kernel keeps the last good ruleset.
func (a *Agent) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("datapath")
	if a.Recorder != nil && a.NodeName != "" {
		a.Recorder.Eventf(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.NodeName}}, nil, corev1.EventTypeNormal,
			"Starting", "StartNodeAgent", "")
	}
	if a.Health != nil {
		a.Health.Updated() // the sync loop runs: from now on a late update is unhealthy
		a.Health.QueuedUpdate()
	}
	if err := a.initialSync(ctx); err != nil {
		logger.Error(err, "initial nftables sync failed; retrying in the background")
	} else {
		a.recordSynced()
	}
	close(a.synced)
	go a.Proxier.Run(ctx)
	pacer := newSyncPacer(a.Options.MinSyncPeriod)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.pending:
		}
		if pacer.Wait(ctx) != nil {
			return nil // ctx is done
		}
		if err := a.Proxier.Apply(ctx); err != nil {
			logger.Error(err, "nftables sync failed; the last good ruleset stays, retrying")
			time.AfterFunc(max(a.Options.MinSyncPeriod, time.Second), a.requestApply)
			continue
		}
		a.recordSynced()
	}
}

// burstSyncs is how many Applies may follow one another without waiting, as kube-proxy's
// sync runner allows: a change that comes right after another is applied at once, and only
// a longer burst is coalesced, one Apply per MinSyncPeriod.
const burstSyncs = 2

// newSyncPacer paces Applies: burstSyncs at once, refilled at one per minSyncPeriod
// (none: unpaced).
func newSyncPacer(minSyncPeriod time.Duration) *rate.Limiter {
	return rate.NewLimiter(rate.Every(minSyncPeriod), burstSyncs)
}

// recordSynced records a successful sync for the health server and the latency metric.
func (a *Agent) recordSynced() {
	if a.Health != nil {
		a.Health.Updated()
	}
	a.observeProgrammed(time.Now())
}

func (a *Agent) initialSync(ctx context.Context) error {
	// The first ruleset already follows topology hints for this node's zone; without it
	// (the Node cannot be read) hints wait for the Node watch, the ruleset does not.
	if err := a.followZone(ctx); err != nil {
		log.FromContext(ctx).Error(err, "cannot read this node's zone yet; topology hints are ignored until it is known")
	}
	var services corev1.ServiceList
	if err := a.Client.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	var slices discoveryv1.EndpointSliceList
	if err := a.Client.List(ctx, &slices, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list endpointslices: %w", err)
	}
	svcs := make([]*corev1.Service, 0, len(services.Items))
	for i := range services.Items {
		if a.serves(&services.Items[i]) {
			svcs = append(svcs, &services.Items[i])
		}
	}
	slcs := make([]*discoveryv1.EndpointSlice, 0, len(slices.Items))
	for i := range slices.Items {
		if ProxiedBy(&slices.Items[i], a.ProxyName) {
			slcs = append(slcs, &slices.Items[i])
		}
	}
	return a.Proxier.Sync(ctx, svcs, slcs)
}

// followZone reads this node's zone from its Node and gives it to the Proxier (a Node
// without the label, or not found, has no zone, as kube-proxy reads it), and tells Health
// whether the Node is being deleted.
func (a *Agent) followZone(ctx context.Context) error {
	if a.NodeName == "" {
		return nil
	}
	node := &corev1.Node{}
	err := a.Client.Get(ctx, types.NamespacedName{Name: a.NodeName}, node)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get node %s for its zone: %w", a.NodeName, err)
	}
	if a.Health != nil {
		if apierrors.IsNotFound(err) {
			a.Health.SetNode(nil)
		} else {
			a.Health.SetNode(node)
		}
	}
	zone := node.GetLabels()[corev1.LabelTopologyZone]
	if a.Proxier.SetZone(zone) {
		log.FromContext(ctx).Info("Node zone changed; Services with topology hints follow it", "node", a.NodeName, "zone", zone)
		a.requestApply()
	}
	return nil
}

// OwnNodeCache is the manager cache setting for Nodes (cache.Options.ByObject) of a process
// that runs the agent without the endpoints controller: it lists and watches only the agent's
// own Node, as kube-proxy does, instead of every Node of the cluster on every node.
func OwnNodeCache(nodeName string) cache.ByObject {
	return cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", nodeName)}
}

// nodeZoneReconciler follows the zone label of the agent's own Node.
type nodeZoneReconciler struct{ agent *Agent }

func (r nodeZoneReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	return reconcile.Result{}, r.agent.followZone(ctx)
}

// NeedLeaderElection is false: every node programs its own nftables.
func (a *Agent) NeedLeaderElection() bool { return false }

// Healthy fails once MaxConsecutiveFailures syncs in a row have failed; use it as a healthz check.
func (a *Agent) Healthy(_ *http.Request) error {
	stats := a.Proxier.Stats()
	if a.Options.MaxConsecutiveFailures > 0 && stats.ConsecutiveFailures >= a.Options.MaxConsecutiveFailures {
		return fmt.Errorf("%d nftables syncs failed in a row, last: %w", stats.ConsecutiveFailures, stats.LastError)
	}
	return nil
}

// Ready passes once the first full sync has been attempted; use it as a readyz check.
func (a *Agent) Ready(_ *http.Request) error {
	select {
	case <-a.synced:
		return nil
	default:
		return errors.New("the first nftables sync has not run yet")
	}
}

// SetupWithManager registers the agent's reconciler (one request per Service), its sync
// loop and its health checks. Node agents run on every node, so none of it takes part in
// leader election.
func (a *Agent) SetupWithManager(mgr ctrl.Manager) error {
	if a.Proxier == nil {
		return errors.New("node agent needs a Datapath (a datapath.Proxier)")
	}
	a.synced = make(chan struct{})
	a.pending = make(chan struct{}, 1)
	a.startedAt = time.Now()
	a.endpoints = map[types.NamespacedName]int{}
	a.lastTriggers = map[types.NamespacedName]string{}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &discoveryv1.EndpointSlice{}, sliceServiceIndex,
		func(o client.Object) []string {
			if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
				return []string{name}
			}
			return nil
		}); err != nil {
		return fmt.Errorf("index EndpointSlices by Service: %w", err)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("datapath").
		Watches(&corev1.Service{}, &handler.EnqueueRequestForObject{}).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(sliceToService)).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(a)
	if err != nil {
		return err
	}
	if a.NodeName != "" {
		err = ctrl.NewControllerManagedBy(mgr).
			Named("datapath-node-zone").
			Watches(&corev1.Node{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(
				predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == a.NodeName }))).
			WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
			Complete(nodeZoneReconciler{agent: a})
		if err != nil {
			return err
		}
	}
	if err := a.setupServiceCIDRs(mgr); err != nil {
		return err
	}
	if err := mgr.Add(a); err != nil {
		return err
	}
	if a.Health != nil && a.HealthzAddress != "" {
		// As kube-proxy, a health server that cannot listen (port taken) is logged and retried,
		// not a reason to stop programming the node.
		if err := mgr.Add(nodeRunnable(func(ctx context.Context) error {
			for {
				err := serveUntilDone(ctx, a.HealthzAddress, a.Health.Handler())
				if err == nil || ctx.Err() != nil {
					return nil
				}
				log.FromContext(ctx).Error(err, "proxy health server failed; retrying in 5s")
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(5 * time.Second):
				}
			}
		})); err != nil {
			return err
		}
	}
	if a.ServiceHealth != nil {
		if err := mgr.Add(nodeRunnable(func(ctx context.Context) error {
			<-ctx.Done()
			a.ServiceHealth.Close()
			return nil
		})); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("datapath", a.Healthy); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("datapath", a.Ready)
}

// nodeRunnable is a manager runnable that runs on every node, leader or not.
type nodeRunnable func(ctx context.Context) error

func (r nodeRunnable) Start(ctx context.Context) error { return r(ctx) }

func (nodeRunnable) NeedLeaderElection() bool { return false }

// sliceToService maps an EndpointSlice to the Service it belongs to.
func sliceToService(_ context.Context, obj client.Object) []reconcile.Request {
	name := obj.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: name}}}
}
