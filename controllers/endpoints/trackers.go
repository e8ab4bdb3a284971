package endpoints

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// expectationTTL bounds how long a write we made may be missing from the cache before we stop
// waiting for it (someone else may have changed the object in between).
const expectationTTL = 10 * time.Second

// writeExpectations remember, per owner (Service or Endpoints), the objects we just wrote, so that a
// reconcile does not act on a cache that has not seen them yet: it would create duplicate slices,
// or take an outdated object for a no-op. This is upstream's EndpointSliceTracker idea.
//
// They also remember the resourceVersion each create or update of ours produced, so that the
// watch event showing that version back does not sync the owner again (upstream's ShouldSync):
// it shows what we just published. Skipping these echoes halves the syncs of a Service that
// changes, and of every Service when the controller publishes from empty.
type writeExpectations struct {
	mu      sync.Mutex
	byOwner map[types.NamespacedName]map[string]expectation
	written map[types.NamespacedName]map[string]string // owner → object name → our resourceVersion
}

// expectation: the object named by the key had resourceVersion replacedRV ("" when we created it)
// before our write; deleted says the write was a delete.
type expectation struct {
	replacedRV string
	deleted    bool
	deadline   time.Time
}

func newWriteExpectations() *writeExpectations {
	return &writeExpectations{
		byOwner: map[types.NamespacedName]map[string]expectation{},
		written: map[types.NamespacedName]map[string]string{},
	}
}

// expectWrite records a create (replacedRV "") or update of ours: the expectation, and the
// resourceVersion it produced, whose echo isEcho tells.
func (w *writeExpectations) expectWrite(owner types.NamespacedName, name, replacedRV, writtenRV string) {
	w.expect(owner, name, replacedRV, false)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.written[owner] == nil {
		w.written[owner] = map[string]string{}
	}
	w.written[owner][name] = writtenRV
}

// isEcho says whether an object seen in a watch event is, at that resourceVersion, one we wrote;
// the record goes with the answer, as the echo comes once.
func (w *writeExpectations) isEcho(owner types.NamespacedName, name, resourceVersion string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	rv, ok := w.written[owner][name]
	if !ok || rv != resourceVersion {
		return false
	}
	delete(w.written[owner], name)
	if len(w.written[owner]) == 0 {
		delete(w.written, owner)
	}
	return true
}

func (w *writeExpectations) expect(owner types.NamespacedName, name, replacedRV string, deleted bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byOwner[owner] == nil {
		w.byOwner[owner] = map[string]expectation{}
	}
	w.byOwner[owner][name] = expectation{replacedRV: replacedRV, deleted: deleted, deadline: time.Now().Add(expectationTTL)}
}

// satisfied says whether the cache (cachedRV by object name) has caught up with every write we made
// for owner; expectations it meets are forgotten.
func (w *writeExpectations) satisfied(owner types.NamespacedName, cachedRV map[string]string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	ok := true
	for name, e := range w.byOwner[owner] {
		rv, present := cachedRV[name]
		var stale bool
		switch {
		case e.deleted:
			stale = present && rv == e.replacedRV
		case e.replacedRV == "":
			stale = !present
		default:
			stale = present && rv == e.replacedRV
		}
		if stale && now.Before(e.deadline) {
			ok = false
			continue
		}
		delete(w.byOwner[owner], name)
	}
	if len(w.byOwner[owner]) == 0 {
		delete(w.byOwner, owner)
	}
	return ok
}

func (w *writeExpectations) forget(owner types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byOwner, owner)
	delete(w.written, owner)
}

// triggerTimes computes corev1.EndpointsLastChangeTriggerTime as upstream's TriggerTimeTracker
// does: the earliest Ready-transition time among pods that changed since the last sync (or the
// Service's creation when it is new to us), zero when nothing observable changed.
type triggerTimes struct {
	mu     sync.Mutex
	states map[types.NamespacedName]triggerState
}

type triggerState struct {
	pods    map[string]time.Time
	service time.Time
}

func newTriggerTimes() *triggerTimes {
	return &triggerTimes{states: map[types.NamespacedName]triggerState{}}
}

func (t *triggerTimes) compute(svc *corev1.Service, pods []*corev1.Pod) time.Time {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, known := t.states[key]
	var earliest time.Time
	earlier := func(candidate time.Time) {
		if earliest.IsZero() || candidate.Before(earliest) {
			earliest = candidate
		}
	}
	next := triggerState{pods: make(map[string]time.Time, len(pods)), service: svc.CreationTimestamp.Time}
	for _, pod := range pods {
		for _, c := range pod.Status.Conditions {
			if c.Type != corev1.PodReady || c.LastTransitionTime.IsZero() {
				continue
			}
			next.pods[pod.Name] = c.LastTransitionTime.Time
			if c.LastTransitionTime.After(old.pods[pod.Name]) {
				earlier(c.LastTransitionTime.Time)
			}
		}
	}
	if next.service.After(old.service) {
		earlier(next.service)
	}
	t.states[key] = next
	if !known {
		return svc.CreationTimestamp.Time
	}
	return earliest
}

func (t *triggerTimes) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.states, key)
}
