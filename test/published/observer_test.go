package published

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// endableWatches is a fake API client whose watches the test can end, as the API server ends
// those of a watcher that falls behind.
type endableWatches struct {
	client.WithWatch
	mu      sync.Mutex
	watches []watch.Interface
}

func (c *endableWatches) Watch(ctx context.Context, list client.ObjectList, opts ...client.ListOption) (watch.Interface, error) {
	w, err := c.WithWatch.Watch(ctx, list, opts...)
	if err == nil {
		c.mu.Lock()
		c.watches = append(c.watches, w)
		c.mu.Unlock()
	}
	return w, err
}

// List gives the list a resourceVersion, which the fake leaves empty and a real API server never does.
func (c *endableWatches) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := c.WithWatch.List(ctx, list, opts...); err != nil {
		return err
	}
	if list.GetResourceVersion() == "" {
		list.SetResourceVersion("1")
	}
	return nil
}

func (c *endableWatches) started() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watches)
}

func (c *endableWatches) endLast() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watches[len(c.watches)-1].Stop()
}

func TestObserverFollowGoesOnAfterTheWatchEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &endableWatches{WithWatch: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()}
	obs := NewObserver()
	w, err := obs.Follow(ctx, c, &corev1.EndpointsList{}, "ns")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	publish := func(name string) {
		t.Helper()
		ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1"}}}}}
		if err := c.Create(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	seen := func(name string) bool {
		at := obs.Await(10*time.Second, func() bool { ready, _ := obs.EndpointsReadyLocked(name, "10.0.0.1"); return ready })
		return !at.IsZero()
	}
	awaitWatches := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); c.started() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d watches started, want %d", c.started(), n)
			}
		}
	}

	awaitWatches(1)
	publish("before")
	if !seen("before") {
		t.Fatal("the Observer did not see an Endpoints created while it followed")
	}
	c.endLast()
	// The fake API server does not replay what happened between two watches, so publish only
	// once the new one is up.
	awaitWatches(2)
	publish("after")
	if !seen("after") {
		t.Fatal("the Observer did not see an Endpoints created after its watch had ended and started again")
	}
	if got := obs.Rewatches(); got != 1 {
		t.Errorf("Rewatches() = %d, want 1", got)
	}
}

func TestObserverSeesPodReadinessChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &endableWatches{WithWatch: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).
		WithStatusSubresource(&corev1.Pod{}).Build()}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	obs := NewObserver()
	w, err := obs.Follow(ctx, c, &corev1.PodList{}, "ns")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for deadline := time.Now().Add(10 * time.Second); c.started() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pod watch did not start")
		}
	}
	obs.mu.Lock()
	_, known := obs.PodReadyLocked("p")
	obs.mu.Unlock()
	if known {
		t.Fatal("a pod that existed before Follow and did not change is known; the Observer should see changes only")
	}
	for _, ready := range []bool{true, false} {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatal(err)
		}
		at := obs.Await(10*time.Second, func() bool { got, known := obs.PodReadyLocked("p"); return known && got == ready })
		if at.IsZero() {
			t.Fatalf("the Observer did not see the pod turn ready=%v", ready)
		}
	}
}
