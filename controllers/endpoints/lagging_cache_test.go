package endpoints

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// laggingSlices is an API server (a fake client) and a cache of it that has not seen some
// EndpointSlices or Endpoints yet, as after an API server outage, while the cache's reflector
// waits to list again.
type laggingSlices struct {
	api             client.Client
	cache           client.Client
	unseen          map[string]bool // slice names
	unseenEndpoints bool
}

func newLaggingSlices(objs ...client.Object) *laggingSlices {
	l := &laggingSlices{unseen: map[string]bool{}}
	api := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(objs...)
	for _, ix := range cacheIndexes {
		api = api.WithIndex(ix.obj, ix.field, ix.fn)
	}
	l.api = api.Build()
	l.cache = interceptor.NewClient(l.api.(client.WithWatch), interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			if s, ok := list.(*discoveryv1.EndpointSliceList); ok {
				s.Items = slices.DeleteFunc(s.Items, func(s discoveryv1.EndpointSlice) bool { return l.unseen[s.Name] })
			}
			return nil
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Endpoints); ok && l.unseenEndpoints {
				return apierrors.NewNotFound(corev1.Resource("endpoints"), key.Name)
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	return l
}

// reconciler is a Service reconciler that reads from the lagging cache and writes to the API.
func (l *laggingSlices) reconciler() *serviceReconciler {
	recorder := events.NewFakeRecorder(100)
	return &serviceReconciler{
		Reader: l.cache, EndpointsWriter: l.api, SliceWriter: l.api, Recorder: recorder,
		MaxEndpointsPerSlice: 100,
		expectations:         newWriteExpectations(),
		triggerTimes:         newTriggerTimes(),
		findings:             newFindingReporter(recorder, l.api, l.api),
		hintEvents:           newHintEventReporter(recorder),
	}
}

// syncer returns a function that syncs svc once with r and fails the test on an error.
func syncer(t *testing.T, r *serviceReconciler, svc *corev1.Service) func() ctrl.Result {
	ctx := ctrl.LoggerInto(context.Background(), ctrl.Log)
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(svc)}
	return func() ctrl.Result {
		t.Helper()
		res, err := r.Reconcile(ctx, req)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		return res
	}
}

func (l *laggingSlices) slices(t *testing.T) []discoveryv1.EndpointSlice {
	t.Helper()
	var list discoveryv1.EndpointSliceList
	if err := l.api.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// publishedIPs lists every endpoint address of the slices, duplicates included, sorted.
func publishedIPs(published []discoveryv1.EndpointSlice) []string {
	var ips []string
	for _, s := range published {
		for _, e := range s.Endpoints {
			ips = append(ips, e.Addresses...)
		}
	}
	slices.Sort(ips)
	return ips
}

// A sync that gave up waiting for the cache to show its slice writes a second one with the same
// endpoints. The first slice showing up in the cache at last must sync the Service, which then
// keeps each endpoint once: the echo of our own write is news by then.
func TestSliceTheCacheShowsAfterTheSyncStoppedWaitingSyncsTheService(t *testing.T) {
	svc := service()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	l := newLaggingSlices(svc, node, pod("a", "10.0.0.1"), pod("b", "10.0.0.2"))
	r := l.reconciler()
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(svc)}
	sync := syncer(t, r, svc)
	want := []string{"10.0.0.1", "10.0.0.2"}

	sync()
	first := l.slices(t)
	if got := publishedIPs(first); len(first) != 1 || !slices.Equal(got, want) {
		t.Fatalf("first sync published %d slices with %v, want one with %v", len(first), got, want)
	}
	l.unseen[first[0].Name] = true
	if res := sync(); res.RequeueAfter == 0 || len(l.slices(t)) != 1 {
		t.Fatalf("a sync while the cache lacks our slice: result %+v, %d slices; want a requeue and no new slice", res, len(l.slices(t)))
	}

	for name, e := range r.expectations.byOwner[req.NamespacedName] {
		e.deadline = time.Now().Add(-time.Second)
		r.expectations.byOwner[req.NamespacedName][name] = e
	}
	sync()
	if got := publishedIPs(l.slices(t)); len(got) != 2*len(want) {
		t.Fatalf("the sync that stopped waiting published %v; this test expects it to write the endpoints again", got)
	}

	l.unseen = map[string]bool{}
	if !r.expectations.observe(req.NamespacedName, first[0].Name, first[0].ResourceVersion, func() {
		t.Fatalf("an event was held with no write in flight")
	}) {
		t.Fatalf("the cache showing the first slice at last does not sync the Service: its endpoints stay published twice")
	}
	sync()
	if got := publishedIPs(l.slices(t)); !slices.Equal(got, want) {
		t.Errorf("after the cache caught up the slices publish %v, want %v", got, want)
	}
}

// The Endpoints of a Service deleted right after our sync created them may not be in the cache
// when the delete is synced, and no event of ours syncs the Service later (upstream's
// controller hears only deletes of Endpoints). The sync of the deleted Service waits for the
// cache instead of deleting by it, so the Endpoints do not stay behind.
func TestEndpointsTheCacheHasNotShownYetGoWithTheirService(t *testing.T) {
	ctx := context.Background()
	svc := service()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	l := newLaggingSlices(svc, node, pod("a", "10.0.0.1"))
	sync := syncer(t, l.reconciler(), svc)
	endpointsExist := func() bool {
		err := l.api.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Endpoints{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}

	sync()
	if !endpointsExist() {
		t.Fatalf("the first sync wrote no Endpoints")
	}
	l.unseenEndpoints = true
	if err := l.api.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if res := sync(); res.RequeueAfter == 0 || !endpointsExist() {
		t.Fatalf("the sync of the deleted Service while the cache lacks our Endpoints: result %+v, Endpoints exist %v; want a requeue",
			res, endpointsExist())
	}
	l.unseenEndpoints = false
	sync()
	if endpointsExist() {
		t.Errorf("the Endpoints of the deleted Service stay behind")
	}
}
