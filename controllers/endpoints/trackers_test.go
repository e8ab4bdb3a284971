package endpoints

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestWriteExpectations(t *testing.T) {
	owner := types.NamespacedName{Namespace: "ns", Name: "web"}
	cases := []struct {
		name       string
		replacedRV string
		deleted    bool
		cached     map[string]string
		want       bool
	}{
		{name: "a slice we created is stale until the cache has it", cached: map[string]string{}, want: false},
		{name: "a slice we created is satisfied once cached", cached: map[string]string{"s": "5"}, want: true},
		{name: "an update is stale while the cache shows the version we replaced", replacedRV: "4", cached: map[string]string{"s": "4"}, want: false},
		{name: "an update is satisfied by any newer version", replacedRV: "4", cached: map[string]string{"s": "9"}, want: true},
		{name: "an update of an object someone deleted does not wait", replacedRV: "4", cached: map[string]string{}, want: true},
		{name: "a delete is stale while the cache still has the object", replacedRV: "4", deleted: true, cached: map[string]string{"s": "4"}, want: false},
		{name: "a delete is satisfied once the object left the cache", replacedRV: "4", deleted: true, cached: map[string]string{}, want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWriteExpectations()
			w.expect(owner, "s", tc.replacedRV, tc.deleted)
			if got := w.satisfied(owner, tc.cached); got != tc.want {
				t.Errorf("satisfied = %v, want %v", got, tc.want)
			}
			if tc.want && len(w.byOwner) != 0 {
				t.Errorf("met expectations are kept: %v", w.byOwner)
			}
		})
	}
}

func TestWriteExpectationsEndWhenTheCacheSeesTheObjectDeleted(t *testing.T) {
	owner := types.NamespacedName{Namespace: "ns", Name: "web"}
	w := newWriteExpectations()
	w.expectWrite(owner, "s", "", "7")
	w.expectWrite(owner, "t", "", "8")
	w.observeDeleted(owner, "s")
	if w.satisfied(owner, map[string]string{}) {
		t.Fatalf("a delete event of one object ends the wait for another")
	}
	if !w.satisfied(owner, map[string]string{"t": "8"}) {
		t.Errorf("a sync still waits for a create that someone deleted before our cache showed it")
	}
}

func TestWriteExpectationsGiveUpAfterTTL(t *testing.T) {
	owner := types.NamespacedName{Namespace: "ns", Name: "web"}
	w := newWriteExpectations()
	w.expectWrite(owner, "s", "", "7")
	w.expectWrite(owner, "t", "", "8")
	w.byOwner[owner]["t"] = expectation{deadline: time.Now().Add(-time.Second)}
	if w.satisfied(owner, map[string]string{}) {
		t.Fatalf("a write the cache lacks, still within its deadline, does not block syncs")
	}
	if !w.satisfied(owner, map[string]string{"s": "7"}) {
		t.Errorf("an expired expectation still blocks syncs")
	}
	// The cache has "s" by now: the sync waited for it, so its echo is still ours. The sync gave
	// up on "t" and may have written what "t" has again: "t" showing up at last must sync.
	mustNotHold := func() { t.Fatalf("an event was held with no write in flight") }
	if w.observe(owner, "s", "7", mustNotHold) {
		t.Errorf("the echo of a write the cache showed in time is delivered")
	}
	if !w.observe(owner, "t", "8", mustNotHold) {
		t.Errorf("a write the cache showed only after the sync stopped waiting is dropped as an echo")
	}
}

func TestTriggerTimes(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := service(func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(created) })
	readyAt := func(p *corev1.Pod, at time.Time) *corev1.Pod {
		p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(at)
		return p
	}
	t1, t2 := created.Add(time.Minute), created.Add(2*time.Minute)
	tracker := newTriggerTimes()
	steps := []struct {
		name string
		pods []*corev1.Pod
		want time.Time
	}{
		{name: "a Service new to us triggers at its creation", pods: pods(readyAt(pod("a", "10.0.0.1"), t1)), want: created},
		{name: "nothing changed: no trigger time", pods: pods(readyAt(pod("a", "10.0.0.1"), t1)), want: time.Time{}},
		{name: "a pod's readiness transition triggers at that transition", pods: pods(readyAt(pod("a", "10.0.0.1"), t2)), want: t2},
		{
			name: "of several changed pods, the earliest change counts",
			pods: pods(readyAt(pod("a", "10.0.0.1"), t2.Add(time.Minute)), readyAt(pod("b", "10.0.0.2"), t2.Add(30*time.Second))),
			want: t2.Add(30 * time.Second),
		},
	}
	for _, step := range steps {
		if got := tracker.compute(svc, step.pods); !got.Equal(step.want) {
			t.Errorf("%s: trigger time = %v, want %v", step.name, got, step.want)
		}
	}
}

func TestWriteExpectationsTellOurEchoesOnce(t *testing.T) {
	owner := types.NamespacedName{Namespace: "ns", Name: "web"}
	w := newWriteExpectations()
	mustNotHold := func() { t.Fatalf("an event was held with no write in flight") }
	echo := func(name, rv string) bool { return !w.observe(owner, name, rv, mustNotHold) }
	w.expectWrite(owner, "s", "", "7")
	if echo("s", "6") {
		t.Errorf("an older version is taken for our write")
	}
	if echo("other", "7") {
		t.Errorf("another object is taken for our write")
	}
	if !echo("s", "7") {
		t.Errorf("the version we wrote is not taken for our echo")
	}
	if echo("s", "7") {
		t.Errorf("the record of our write outlives its echo")
	}
	w.expectWrite(owner, "s", "7", "8")
	w.forget(owner)
	if echo("s", "8") {
		t.Errorf("forget keeps what we wrote")
	}
}

func TestWriteExpectationsHoldEventsWhileWritesAreInFlight(t *testing.T) {
	owner := types.NamespacedName{Namespace: "ns", Name: "web"}
	other := types.NamespacedName{Namespace: "ns", Name: "db"}
	w := newWriteExpectations()
	var delivered []string
	observe := func(owner types.NamespacedName, name, rv string) bool {
		return w.observe(owner, name, rv, func() { delivered = append(delivered, name+"@"+rv) })
	}

	w.begin(owner)
	if observe(owner, "s", "7") {
		t.Errorf("an event of an owner with writes in flight is delivered before they answer")
	}
	if observe(owner, "t", "9") {
		t.Errorf("an event of an owner with writes in flight is delivered before they answer")
	}
	if !observe(other, "u", "3") {
		t.Errorf("an event of another owner is held")
	}
	w.expectWrite(owner, "s", "", "7") // the response of the write "s"@7 echoed
	w.expectWrite(owner, "t", "", "8") // "t"@9 is a later write, by someone else
	w.end(owner)
	if want := []string{"t@9"}; !slices.Equal(delivered, want) {
		t.Errorf("delivered at end %v, want %v: the held echo dropped, the other change kept", delivered, want)
	}
	if !observe(owner, "s", "7") {
		t.Errorf("an echo taken back from the held events is dropped again later")
	}
	if observe(owner, "t", "8") {
		t.Errorf("the echo of a write answered after another's change is not known")
	}
}
