package endpoints

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// expectationTTL bounds how long a write we made may be missing from the cache before we stop
// waiting for it: only a cache that missed a create and a delete of the object both (as a relist
// does) keeps it missing for good. A cache also lags while its watch is down: after an API server
// outage, client-go's reflectors wait up to a minute between attempts to list again (30 s, and
// a jitter of as much again). A sync that stopped waiting sooner wrote a second slice for
// endpoints the first had.
const expectationTTL = 2 * time.Minute

// writeExpectations remember, per owner (Service or Endpoints), the objects we just wrote, so that a
// reconcile does not act on a cache that has not seen them yet: it would create duplicate slices,
// or take an outdated object for a no-op. This is upstream's EndpointSliceTracker idea.
//
// They also remember the resourceVersion each create or update of ours produced, so that the
// watch event showing that version back does not sync the owner again (upstream's ShouldSync):
// it shows what we just published. Skipping these echoes halves the syncs of a Service that
// changes, and of every Service when the controller publishes from empty.
//
// An echo can come before our write's response, while the version is not known yet: on a busy
// machine a third of them did, each costing the Service one more sync. So while a sync of the
// owner writes (begin to end), events of its objects that are not known echoes are held; the
// responses take back their echoes, and end delivers the rest, which others wrote.
type writeExpectations struct {
	mu       sync.Mutex
	byOwner  map[types.NamespacedName]map[string]expectation
	written  map[types.NamespacedName]map[string]string // owner → object name → our resourceVersion
	inFlight map[types.NamespacedName]int               // owner → syncs between begin and end
	held     map[types.NamespacedName][]heldEvent
}

// expectation: the object named by the key had resourceVersion replacedRV ("" when we created it)
// before our write; deleted says the write was a delete.
type expectation struct {
	replacedRV string
	deleted    bool
	deadline   time.Time
}

// heldEvent is an event that came while its owner's writes were in flight.
type heldEvent struct {
	name, resourceVersion string
	deliver               func()
}

func newWriteExpectations() *writeExpectations {
	return &writeExpectations{
		byOwner:  map[types.NamespacedName]map[string]expectation{},
		written:  map[types.NamespacedName]map[string]string{},
		inFlight: map[types.NamespacedName]int{},
		held:     map[types.NamespacedName][]heldEvent{},
	}
}

// begin says a sync of owner is about to write; pair it with end.
func (w *writeExpectations) begin(owner types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.inFlight[owner]++
}

// end says the sync's writes have answered, and delivers the events held meanwhile that were
// not their echoes.
func (w *writeExpectations) end(owner types.NamespacedName) {
	w.mu.Lock()
	w.inFlight[owner]--
	var others []heldEvent
	if w.inFlight[owner] <= 0 {
		delete(w.inFlight, owner)
		others = w.held[owner]
		delete(w.held, owner)
	}
	w.mu.Unlock()
	for _, e := range others {
		e.deliver()
	}
}

// expectWrite records a create (replacedRV "") or update of ours: the expectation, and the
// resourceVersion it produced, whose echo observe drops (or, held already, takes back).
func (w *writeExpectations) expectWrite(owner types.NamespacedName, name, replacedRV, writtenRV string) {
	w.expect(owner, name, replacedRV, false)
	w.mu.Lock()
	defer w.mu.Unlock()
	held := w.held[owner]
	for i, e := range held {
		if e.name == name && e.resourceVersion == writtenRV {
			w.held[owner] = append(held[:i:i], held[i+1:]...)
			return
		}
	}
	if w.written[owner] == nil {
		w.written[owner] = map[string]string{}
	}
	w.written[owner][name] = writtenRV
}

// observe decides about an object seen in a create or update event: false when it is, at that
// resourceVersion, one we wrote (the record goes, as the echo comes once) or when it is held
// until the owner's writes answer (deliver runs then, unless it was their echo); true to deliver
// it now.
func (w *writeExpectations) observe(owner types.NamespacedName, name, resourceVersion string, deliver func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rv, ok := w.written[owner][name]; ok && rv == resourceVersion {
		w.forgetWritten(owner, name)
		return false
	}
	if w.inFlight[owner] > 0 {
		w.held[owner] = append(w.held[owner], heldEvent{name: name, resourceVersion: resourceVersion, deliver: deliver})
		return false
	}
	return true
}

// observeDeleted forgets what we expected of an object the cache saw deleted: a delete by someone
// else overtook our write, so the cache will never show that write, and syncs need not wait.
func (w *writeExpectations) observeDeleted(owner types.NamespacedName, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byOwner[owner], name)
	if len(w.byOwner[owner]) == 0 {
		delete(w.byOwner, owner)
	}
	w.forgetWritten(owner, name)
}

// forgetWritten drops the record of our write of name; w.mu is held.
func (w *writeExpectations) forgetWritten(owner types.NamespacedName, name string) {
	delete(w.written[owner], name)
	if len(w.written[owner]) == 0 {
		delete(w.written, owner)
	}
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
		if stale {
			// We no longer wait for this write, so the sync goes on without it. When the cache
			// shows it at last, that is news: it may duplicate what this sync writes.
			w.forgetWritten(owner, name)
		}
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
