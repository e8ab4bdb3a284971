package endpoints

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-clusterip/kube-clusterip/controllers/eventwriter"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=endpoints,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch;list;delete
// Owner references with blockOwnerDeletion on our slices need update on the owner's finalizers
// where OwnerReferencesPermissionEnforcement is on (upstream grants the same).
// +kubebuilder:rbac:groups="",resources=services/finalizers;endpoints/finalizers,verbs=update

// Options tune the endpoints controllers; the zero value means upstream's defaults.
type Options struct {
	// BatchPeriod delays a Service's sync after a pod change, so that a burst of pod changes
	// becomes one write per Service (upstream's --endpoint-updates-batch-period; 0 = no delay).
	// Service changes are synced at once.
	BatchPeriod time.Duration
	// MaxEndpointsPerSlice caps endpoints per EndpointSlice (default 100, as upstream).
	MaxEndpointsPerSlice int
	// MirroringMaxEndpointsPerSubset caps the addresses mirrored per Endpoints subset (default 1000).
	MirroringMaxEndpointsPerSubset int
	// ConcurrentSyncs is the number of Services synced in parallel (default
	// DefaultConcurrentSyncs).
	ConcurrentSyncs int
	// DisableMirroring leaves user-written Endpoints unmirrored.
	DisableMirroring bool
	// NewWriterClient builds the client of each writer (Endpoints, EndpointSlices, mirrored
	// EndpointSlices) from a config of its own (default client.New); tests wrap it to count writes.
	NewWriterClient client.NewClientFunc
}

// DefaultConcurrentSyncs is how many Services are synced in parallel unless told. Upstream has
// 5 workers per controller; ours write both APIs of a Service in one sync, and when 1000
// Services are published from empty the API server is busier with 16 of them in flight than
// with 5 (converge 4.7 s against 5.9 s, medians of 4 on two CPUs).
const DefaultConcurrentSyncs = 16

func (o Options) withDefaults() Options {
	if o.MaxEndpointsPerSlice <= 0 {
		o.MaxEndpointsPerSlice = DefaultMaxEndpointsPerSlice
	}
	if o.MirroringMaxEndpointsPerSubset <= 0 {
		o.MirroringMaxEndpointsPerSubset = DefaultMaxEndpointsPerSubset
	}
	if o.ConcurrentSyncs <= 0 {
		o.ConcurrentSyncs = DefaultConcurrentSyncs
	}
	if o.NewWriterClient == nil {
		o.NewWriterClient = client.New
	}
	return o
}

// Field indexes; lookups are namespaced by the cache, so values need not carry the namespace.
const (
	// podLabelIndex indexes pods by each "key=value" label.
	podLabelIndex = "endpoints.clusterip.dev/pod-label"
	// podNodeIndex indexes pods by spec.nodeName.
	podNodeIndex = "endpoints.clusterip.dev/pod-node"
	// serviceSelectorIndex indexes Services by each "key=value" pair of their selector.
	serviceSelectorIndex = "endpoints.clusterip.dev/service-selector"
	// sliceOwnerIndex indexes EndpointSlices by "<managed-by>/<service-name>".
	sliceOwnerIndex = "endpoints.clusterip.dev/slice-owner"
)

func labelPairs(labels map[string]string) []string {
	pairs := make([]string, 0, len(labels))
	for k, v := range labels {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return pairs
}

func sliceOwnerKey(managedBy, serviceName string) string { return managedBy + "/" + serviceName }

// cacheIndexes are the field indexes the reconcilers list the cache by.
var cacheIndexes = []struct {
	obj   client.Object
	field string
	fn    client.IndexerFunc
}{
	{&corev1.Pod{}, podLabelIndex, func(o client.Object) []string { return labelPairs(o.GetLabels()) }},
	{&corev1.Pod{}, podNodeIndex, func(o client.Object) []string { return []string{o.(*corev1.Pod).Spec.NodeName} }},
	{&corev1.Service{}, serviceSelectorIndex, func(o client.Object) []string {
		return labelPairs(o.(*corev1.Service).Spec.Selector)
	}},
	{&discoveryv1.EndpointSlice{}, sliceOwnerIndex, func(o client.Object) []string {
		l := o.GetLabels()
		if l[discoveryv1.LabelServiceName] == "" || l[discoveryv1.LabelManagedBy] == "" {
			return nil
		}
		return []string{sliceOwnerKey(l[discoveryv1.LabelManagedBy], l[discoveryv1.LabelServiceName])}
	}},
}

// SetupWithManager registers the field indexes and the reconcilers: "endpoints" (Endpoints and
// EndpointSlices of Services with a selector) and, unless disabled, "endpointslicemirroring".
// They read from the manager's cache and write through clients of their own (writerClient).
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	opts = opts.withDefaults()
	ctx := context.Background()
	indexer := mgr.GetFieldIndexer()
	for _, ix := range cacheIndexes {
		if err := indexer.IndexField(ctx, ix.obj, ix.field, ix.fn); err != nil {
			return fmt.Errorf("index %T by %s: %w", ix.obj, ix.field, err)
		}
	}
	// The indexes made the informers of pods, Services and EndpointSlices; make those of the
	// other watched kinds now too, so that all fill together before the controllers start
	// instead of these two after them, on an API server busy with the first writes.
	for _, obj := range []client.Object{&corev1.Endpoints{}, &corev1.Node{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("informer of %T: %w", obj, err)
		}
	}

	endpointsWriter, err := writerClient(mgr, opts.NewWriterClient, endpointsWriterName)
	if err != nil {
		return err
	}
	sliceWriter, err := writerClient(mgr, opts.NewWriterClient, sliceWriterName)
	if err != nil {
		return err
	}
	recorder := mgr.GetEventRecorder(endpointrules.EndpointsControllerName)
	// Findings and hint outcomes are recorded when they change, each change as an Event of its
	// own: client-go's recorder would fold a new note into the first Event's series.
	findingEvents := eventwriter.New(mgr.GetClient(), mgr.GetScheme(), endpointrules.EndpointsControllerName)
	r := &serviceReconciler{
		Reader:               mgr.GetClient(),
		EndpointsWriter:      endpointsWriter,
		SliceWriter:          sliceWriter,
		Recorder:             recorder,
		MaxEndpointsPerSlice: opts.MaxEndpointsPerSlice,
		expectations:         newWriteExpectations(),
		triggerTimes:         newTriggerTimes(),
		findings:             newFindingReporter(findingEvents, mgr.GetAPIReader(), endpointsWriter),
		hintEvents:           newHintEventReporter(findingEvents),
		upstreamSlices:       newUpstreamLeftovers(endpointrules.UpstreamSliceControllerName, time.Now()),
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("endpoints").
		For(&corev1.Service{}).
		Watches(&corev1.Pod{}, podEventHandler(mgr.GetClient(), opts.BatchPeriod, r.findings.servicesMatchingNoPod)).
		Watches(&corev1.Node{}, nodeEventHandler(mgr.GetClient(), opts.BatchPeriod)).
		Watches(&corev1.Endpoints{}, enqueueUnlessEcho(r.expectations, sameName, endpointsOfService, initialListOnly)).
		Watches(&discoveryv1.EndpointSlice{}, enqueueUnlessEcho(r.expectations, sliceService, sliceOfOwner, everyChange),
			builder.WithPredicates(managedBy(endpointrules.SliceControllerName))).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.ConcurrentSyncs}).
		Complete(r)
	if err != nil || opts.DisableMirroring {
		return err
	}
	mirroringWriter, err := writerClient(mgr, opts.NewWriterClient, mirroringWriterName)
	if err != nil {
		return err
	}
	m := &mirroringReconciler{
		Reader:                mgr.GetClient(),
		SliceWriter:           mirroringWriter,
		Recorder:              mgr.GetEventRecorder("endpointslicemirroring-controller.clusterip.dev"),
		MaxEndpointsPerSubset: opts.MirroringMaxEndpointsPerSubset,
		expectations:          newWriteExpectations(),
		upstreamSlices:        newUpstreamLeftovers(endpointrules.UpstreamMirroringControllerName, time.Now()),
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("endpointslicemirroring").
		For(&corev1.Endpoints{}, builder.WithPredicates(mirrorableBeforeOrAfter)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(sameName), builder.WithPredicates(selectorlessBeforeOrAfter)).
		Watches(&discoveryv1.EndpointSlice{}, enqueueUnlessEcho(m.expectations, sliceService, sliceOfOwner, everyChange),
			builder.WithPredicates(managedBy(endpointrules.MirroringControllerName))).
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.ConcurrentSyncs}).
		Complete(m)
}

// The mirroring controller is told, as upstream's, only of the Endpoints events where the
// Endpoints is mirrorable before or after, and of the Service events where the Service has no
// selector or loses or gains one. Skip-mirror Endpoints and the events of Services with a
// selector would otherwise make a sync with nothing to do each.
var (
	mirrorableBeforeOrAfter = predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return mirrorable(e.Object.(*corev1.Endpoints)) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return mirrorable(e.ObjectOld.(*corev1.Endpoints)) || mirrorable(e.ObjectNew.(*corev1.Endpoints))
		},
		DeleteFunc: func(e event.DeleteEvent) bool { return mirrorable(e.Object.(*corev1.Endpoints)) },
	}
	selectorlessBeforeOrAfter = predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return e.Object.(*corev1.Service).Spec.Selector == nil },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return (e.ObjectOld.(*corev1.Service).Spec.Selector == nil) != (e.ObjectNew.(*corev1.Service).Spec.Selector == nil)
		},
		DeleteFunc: func(e event.DeleteEvent) bool { return e.Object.(*corev1.Service).Spec.Selector == nil },
	}
)

// sameName maps an Endpoints to its Service and back: they share namespace and name.
func sameName(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(o)}}
}

// sliceService maps an EndpointSlice to the Service (and Endpoints) its service-name label names.
func sliceService(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// syncingChanges says which create and update events of an object, not echoes of our writes,
// sync its owner.
type syncingChanges bool

const (
	// everyChange: a change by someone else syncs the owner, as upstream's EndpointSlice
	// controllers do for their slices.
	everyChange syncingChanges = true
	// initialListOnly: only the objects of the cache's initial list sync their owner, as
	// upstream's endpoints controller does for Endpoints (it hears only their deletes, and checks
	// every Endpoints for a Service at start): someone else's change stays until the Service or
	// its pods change next.
	initialListOnly syncingChanges = false
)

// enqueueUnlessEcho maps an event to its Service's request, as mapToService does, except for the
// create and update events that show an object as one of our writes left it (see
// writeExpectations), and those that changes leaves out; named gives the object's owner and its
// name among the owner's writes. Every event is observed, as a sync may wait for our writes to
// show. A delete event also ends the wait for our writes of that object.
func enqueueUnlessEcho(exp *writeExpectations, mapToService handler.MapFunc,
	named func(client.Object) (owner types.NamespacedName, name string), changes syncingChanges) handler.EventHandler {
	enqueue := handler.EnqueueRequestsFromMapFunc(mapToService)
	unlessEcho := func(o client.Object, syncs bool, deliver func()) {
		if !syncs {
			deliver = func() {}
		}
		owner, name := named(o)
		if exp.observe(owner, name, o.GetResourceVersion(), deliver) {
			deliver()
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			unlessEcho(e.Object, bool(changes) || replaysInitialList(e), func() { enqueue.Create(ctx, e, q) })
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			unlessEcho(e.ObjectNew, bool(changes), func() { enqueue.Update(ctx, e, q) })
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			owner, name := named(e.Object)
			exp.observeDeleted(owner, name)
			enqueue.Delete(ctx, e, q)
		},
		GenericFunc: enqueue.Generic,
	}
}

func endpointsOfService(o client.Object) (types.NamespacedName, string) {
	return client.ObjectKeyFromObject(o), endpointsExpectationKey
}

func sliceOfOwner(o client.Object) (types.NamespacedName, string) {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetLabels()[discoveryv1.LabelServiceName]}, o.GetName()
}

func managedBy(value string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[discoveryv1.LabelManagedBy] == value
	})
}

// replaysInitialList says whether a create event only replays a cache's initial list. The
// controller starts once its caches are in sync, and every Service then comes as such an event
// of its own, so the pods and nodes of the initial list would only enqueue those Services again.
// Mapping 10,000 pods to their Services was a tenth of the controller's CPU while it published
// 1000 Services from empty: CPU the API server lacked on a small control plane.
func replaysInitialList(e event.CreateEvent) bool { return e.IsInInitialList }

type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// podEventHandler enqueues, after the batch period, the Services whose selector matches a pod that
// came, went, or changed in a way its endpoints show (old and new labels both count).
//
// Services whose selector matched no pod also hear of every pod of their namespace, so that
// their Warning Event can name a near miss that appears later.
func podEventHandler(c client.Client, batch time.Duration, matchingNoPod func(namespace string) []types.NamespacedName) handler.EventHandler {
	enqueue := func(ctx context.Context, q queue, namespace string, labelSets ...map[string]string) {
		for _, req := range servicesSelecting(ctx, c, namespace, nil, labelSets...) {
			q.AddAfter(req, batch)
		}
		for _, key := range matchingNoPod(namespace) {
			q.AddAfter(reconcile.Request{NamespacedName: key}, batch)
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			if replaysInitialList(e) {
				return
			}
			enqueue(ctx, q, e.Object.GetNamespace(), e.Object.GetLabels())
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			oldPod, newPod := e.ObjectOld.(*corev1.Pod), e.ObjectNew.(*corev1.Pod)
			if !podEndpointsChanged(oldPod, newPod) {
				return
			}
			enqueue(ctx, q, newPod.Namespace, oldPod.Labels, newPod.Labels)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q queue) {
			enqueue(ctx, q, e.Object.GetNamespace(), e.Object.GetLabels())
		},
	}
}

// podEndpointsChanged says whether a pod update can change what it publishes.
func podEndpointsChanged(a, b *corev1.Pod) bool {
	return !maps.Equal(a.Labels, b.Labels) ||
		a.Spec.Hostname != b.Spec.Hostname || a.Spec.Subdomain != b.Spec.Subdomain ||
		a.Spec.NodeName != b.Spec.NodeName ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		endpointrules.IsPodReady(a) != endpointrules.IsPodReady(b) ||
		a.Status.Phase != b.Status.Phase ||
		a.Status.PodIP != b.Status.PodIP ||
		!reflect.DeepEqual(a.Status.PodIPs, b.Status.PodIPs) ||
		!reflect.DeepEqual(a.Spec.Containers, b.Spec.Containers)
}

// servicesSelecting finds, through the selector index, the Services whose selector matches any
// of the label sets, and that keep accepts (all if nil).
func servicesSelecting(ctx context.Context, c client.Client, namespace string, keep func(*corev1.Service) bool,
	labelSets ...map[string]string) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	for _, labels := range labelSets {
		for _, pair := range labelPairs(labels) {
			var list corev1.ServiceList
			if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{serviceSelectorIndex: pair},
				client.UnsafeDisableDeepCopy); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Listing Services by selector failed", "namespace", namespace, "pair", pair)
				continue
			}
			for i := range list.Items {
				svc := &list.Items[i]
				key := client.ObjectKeyFromObject(svc)
				if seen[key] || !endpointrules.SelectsLabels(svc, namespace, labels) || (keep != nil && !keep(svc)) {
					continue
				}
				seen[key] = true
				out = append(out, reconcile.Request{NamespacedName: key})
			}
		}
	}
	return out
}

// nodeEventHandler resyncs the Services of the pods on a node that appeared (their pods were
// left out while it was unknown), the Services hinted by zone whose pods are on a node that moved
// zone, and every topology-mode Auto Service when the zones' share of ready CPU may have changed
// (a node came, went, moved zone, turned Ready or not, changed allocatable CPU or control-plane
// role). Like upstream, a node that goes or moves zone leaves the other Services' slices as they
// are until their Service or pods change next.
func nodeEventHandler(c client.Client, batch time.Duration) handler.EventHandler {
	enqueue := func(ctx context.Context, q queue, node string, seen map[types.NamespacedName]bool, keep func(*corev1.Service) bool) {
		var list corev1.PodList
		if err := c.List(ctx, &list, client.MatchingFields{podNodeIndex: node}, client.UnsafeDisableDeepCopy); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing pods by node failed", "node", node)
			return
		}
		for i := range list.Items {
			p := &list.Items[i]
			for _, req := range servicesSelecting(ctx, c, p.Namespace, keep, p.Labels) {
				if !seen[req.NamespacedName] {
					seen[req.NamespacedName] = true
					q.AddAfter(req, batch)
				}
			}
		}
	}
	enqueueAuto := func(ctx context.Context, q queue, seen map[types.NamespacedName]bool) {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing Services for topology aware hints failed")
			return
		}
		for i := range list.Items {
			key := client.ObjectKeyFromObject(&list.Items[i])
			if TopologyAwareHintsAuto(&list.Items[i]) && !seen[key] {
				seen[key] = true
				q.AddAfter(reconcile.Request{NamespacedName: key}, batch)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q queue) {
			if replaysInitialList(e) {
				return
			}
			seen := map[types.NamespacedName]bool{}
			enqueue(ctx, q, e.Object.GetName(), seen, nil)
			enqueueAuto(ctx, q, seen)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q queue) {
			oldNode, newNode := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			seen := map[types.NamespacedName]bool{}
			if oldNode.Labels[corev1.LabelTopologyZone] != newNode.Labels[corev1.LabelTopologyZone] {
				enqueue(ctx, q, newNode.Name, seen, hintedByZone)
			}
			if zoneCPUChanged(oldNode, newNode) {
				enqueueAuto(ctx, q, seen)
			}
		},
		DeleteFunc: func(ctx context.Context, _ event.DeleteEvent, q queue) {
			enqueueAuto(ctx, q, map[types.NamespacedName]bool{})
		},
	}
}

// hintedByZone says whether the Service's spec.trafficDistribution hints endpoints for their zone.
func hintedByZone(svc *corev1.Service) bool { return trafficDistributionOf(svc).zones }

// zoneCPUChanged says whether a node update can change ZoneCPUOf.
func zoneCPUChanged(a, b *corev1.Node) bool {
	return a.Labels[corev1.LabelTopologyZone] != b.Labels[corev1.LabelTopologyZone] ||
		hasControlPlaneLabel(a.Labels) != hasControlPlaneLabel(b.Labels) ||
		isNodeReady(a) != isNodeReady(b) ||
		!a.Status.Allocatable.Cpu().Equal(*b.Status.Allocatable.Cpu())
}
