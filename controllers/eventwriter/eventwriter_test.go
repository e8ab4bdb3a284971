package eventwriter

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestEveryCallIsItsOwnEvent(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(scheme.Scheme).Build()
	r := New(c, scheme.Scheme, "endpoint-controller.example.dev")
	var mu sync.Mutex
	clock := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); clock = clock.Add(time.Millisecond); return clock }

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "auto", Namespace: "shop", UID: "svc-uid"}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"}}
	calls := []struct {
		regarding, related client.Object
		note               string
	}{
		{svc, nil, "Insufficient number of endpoints (1 endpoints, 2 zones), removing hints"},
		{svc, nil, "Nodes only ready in one zone, removing hints"}, // same reason: client-go would fold it away
		{svc, pod, "Nodes only ready in one zone, removing hints"},
		{node, nil, strings.Repeat("é", 600)}, // 1200 bytes
	}
	for _, call := range calls {
		r.Eventf(call.regarding, call.related, corev1.EventTypeWarning, "TopologyAwareHintsDisabled", "TopologyAwareHints", "%s", call.note)
	}

	// The creates run in the background.
	var list eventsv1.EventList
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := c.List(context.Background(), &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) >= len(calls) || time.Now().After(deadline) {
			break
		}
	}
	if len(list.Items) != len(calls) {
		t.Fatalf("want %d Events, got %d", len(calls), len(list.Items))
	}
	key := func(regarding, related, note string) string { return regarding + "|" + related + "|" + note }
	byKey := map[string]eventsv1.Event{}
	for _, e := range list.Items {
		related := ""
		if e.Related != nil {
			related = e.Related.Name
		}
		byKey[key(e.Regarding.Name, related, e.Note)] = e
	}
	for _, call := range calls[:3] {
		related := ""
		if call.related != nil {
			related = call.related.GetName()
		}
		e, ok := byKey[key(call.regarding.GetName(), related, call.note)]
		switch {
		case !ok:
			t.Errorf("no Event with note %q", call.note)
		case e.Namespace != "shop" || e.Regarding.Kind != "Service" || e.Regarding.UID != "svc-uid":
			t.Errorf("Event %s/%s regards %+v", e.Namespace, e.Name, e.Regarding)
		case (call.related == nil) != (e.Related == nil):
			t.Errorf("Event %q: related %+v, want %v", call.note, e.Related, call.related)
		case e.ReportingController != "endpoint-controller.example.dev" || !strings.HasPrefix(e.ReportingInstance, "endpoint-controller.example.dev-"):
			t.Errorf("reported by %q/%q", e.ReportingController, e.ReportingInstance)
		case e.EventTime.IsZero() || e.Type != corev1.EventTypeWarning || e.Action != "TopologyAwareHints" || e.Series != nil:
			t.Errorf("Event %+v", e)
		}
	}
	for _, e := range list.Items {
		if e.Regarding.Kind == "Node" {
			if e.Namespace != metav1.NamespaceDefault || len(e.Note) > maxNoteBytes || !strings.HasPrefix(e.Note, "éé") || strings.ContainsRune(e.Note, '\uFFFD') {
				t.Errorf("a Node's long Event: namespace %q, %d bytes", e.Namespace, len(e.Note))
			}
		}
	}
}
