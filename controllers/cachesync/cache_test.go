package cachesync

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
)

// notYet is how long a test gives WaitForCacheSync to (wrongly) report a sync that has not
// happened; it bounds a wait that must fail, it times nothing.
const notYet = 50 * time.Millisecond

// gatedInformer is a real client-go informer of two Services whose initial list is answered only
// once the returned release function is called.
func gatedInformer(t *testing.T) (toolscache.SharedIndexInformer, func()) {
	t.Helper()
	gate := make(chan struct{})
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, _ metav1.ListOptions) (runtime.Object, error) {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "2"}, Items: []corev1.Service{
				{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", ResourceVersion: "1"}},
				{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b", ResourceVersion: "2"}},
			}}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			return watch.NewFake(), nil
		},
	}
	informer := toolscache.NewSharedIndexInformer(listOnly{lw}, &corev1.Service{}, 0, toolscache.Indexers{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go informer.RunWithContext(ctx)
	var once atomic.Bool
	return informer, func() {
		if once.CompareAndSwap(false, true) {
			close(gate)
		}
	}
}

// listOnly makes a reflector list and then watch, not stream the initial list through its watch.
type listOnly struct{ *toolscache.ListWatch }

func (listOnly) IsWatchListSemanticsUnSupported() bool { return true }

// newCache wraps a cache whose only informer is the given one.
func newCache(t *testing.T, informer toolscache.SharedIndexInformer) *promptCache {
	t.Helper()
	fake := &informertest.FakeInformers{}
	gvk := corev1.SchemeGroupVersion.WithKind("Service")
	fake.InformersByGVK = map[schema.GroupVersionKind]toolscache.SharedIndexInformer{gvk: informer}
	return Wrap(fake).(*promptCache)
}

func synced(c *promptCache, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return c.WaitForCacheSync(ctx)
}

func TestWaitForCacheSyncWaitsForTheInitialList(t *testing.T) {
	informer, release := gatedInformer(t)
	c := newCache(t, informer)
	if _, err := c.GetInformer(context.Background(), &corev1.Service{}); err != nil {
		t.Fatal(err)
	}
	if synced(c, notYet) {
		t.Fatal("in sync before the initial list arrived")
	}
	release()
	if !synced(c, time.Minute) {
		t.Fatal("not in sync after the initial list arrived")
	}
	if !informer.HasSynced() {
		t.Fatal("WaitForCacheSync returned before the informer synced")
	}
}

func TestWaitForCacheSyncWaitsForHandlersToReceiveTheInitialList(t *testing.T) {
	informer, release := gatedInformer(t)
	c := newCache(t, informer)
	tracked, err := c.GetInformer(context.Background(), &corev1.Service{})
	if err != nil {
		t.Fatal(err)
	}
	handlerGate := make(chan struct{})
	var received atomic.Int32
	if _, err := tracked.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(any) {
		<-handlerGate
		received.Add(1)
	}}); err != nil {
		t.Fatal(err)
	}
	release()
	if synced(c, notYet) {
		t.Fatal("in sync before the handler received the initial list")
	}
	close(handlerGate)
	if !synced(c, time.Minute) {
		t.Fatal("not in sync after the handler received the initial list")
	}
	if got := received.Load(); got != 2 {
		t.Fatalf("the handler had received %d of the 2 initial objects when WaitForCacheSync returned", got)
	}
}

func TestRemovedHandlersAreNotWaitedFor(t *testing.T) {
	informer, release := gatedInformer(t)
	c := newCache(t, informer)
	tracked, err := c.GetInformer(context.Background(), &corev1.Service{})
	if err != nil {
		t.Fatal(err)
	}
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	registration, err := tracked.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(any) { <-stuck }})
	if err != nil {
		t.Fatal(err)
	}
	release()
	if err := tracked.RemoveEventHandler(registration); err != nil {
		t.Fatal(err)
	}
	if !synced(c, time.Minute) {
		t.Fatal("waited for a handler that was removed")
	}
}
