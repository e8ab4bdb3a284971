// Package published follows what an endpoints controller publishes (Endpoints and
// EndpointSlices, through watches) and tells when a condition on it became true: the clock of
// the endpoints benchmarks. It also holds their workload (Workload), so that ours and
// upstream's run the same one.
package published

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// Observer follows Endpoints and EndpointSlices (and, to time the flips' first hop, pods)
// through watches and resolves probes (conditions on what it has seen) at the moment an event
// makes them true.
type Observer struct {
	mu             sync.Mutex
	endpointsReady map[string]map[string]bool            // Service → IP → ready
	slices         map[string]map[string]map[string]bool // Service → slice → IP → ready
	podsReady      map[string]bool                       // pod → ready, for the pods changed since Follow
	probes         []*Probe
	// problems are watch errors and ends, for timeout messages.
	problems []string
	// rewatches counts the watches Follow started again where the API server had ended them.
	rewatches atomic.Int32
}

// Probe is a condition waiting to become true.
type Probe struct {
	cond func() bool
	at   time.Time
	done chan struct{}
}

// NewObserver returns an Observer; feed it with Follow.
func NewObserver() *Observer {
	return &Observer{endpointsReady: map[string]map[string]bool{}, slices: map[string]map[string]map[string]bool{},
		podsReady: map[string]bool{}}
}

// Follow feeds the Observer with the changes to objects of list's kind in namespace, from now
// on, and goes on where it left off whenever the API server ends the watch. The API server does
// end a watcher that falls behind, as one in a process busy with the burst being measured may; a
// plain watch would then leave the Observer blind to the rest. It returns the watch to stop.
func (o *Observer) Follow(ctx context.Context, c client.WithWatch, list client.ObjectList, namespace string) (watch.Interface, error) {
	now, err := resourceVersionNow(ctx, c, list, namespace)
	if err != nil {
		return nil, err
	}
	w, err := followFrom(ctx, c, list, namespace, now, func() { o.rewatches.Add(1) })
	if err != nil {
		return nil, err
	}
	go o.consume(w)
	return w, nil
}

// resourceVersionNow is where a watch of list's kind in namespace starts to see only the changes
// from now on: the resourceVersion of a one-item list (a watch without one would first replay
// every object as ADDED).
func resourceVersionNow(ctx context.Context, c client.Reader, list client.ObjectList, namespace string) (string, error) {
	if err := c.List(ctx, list, client.InNamespace(namespace), client.Limit(1)); err != nil {
		return "", err
	}
	return list.GetResourceVersion(), nil
}

// followFrom watches the objects of list's kind in namespace from resourceVersion on, through
// client-go's RetryWatcher: when the API server ends the watch, a new one goes on where it left
// off, and rewatched is called.
func followFrom(ctx context.Context, c client.WithWatch, list client.ObjectList, namespace, resourceVersion string,
	rewatched func()) (watch.Interface, error) {
	first := true
	lw := &toolscache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		if !first {
			rewatched()
		}
		first = false
		return c.Watch(ctx, list.DeepCopyObject().(client.ObjectList), client.InNamespace(namespace), &client.ListOptions{Raw: &opts})
	}}
	return watchtools.NewRetryWatcherWithContext(ctx, resourceVersion, lw)
}

// Rewatches says how many times Follow had to start a watch again.
func (o *Observer) Rewatches() int { return int(o.rewatches.Load()) }

// consume applies a watch's events until it ends and resolves the probes they satisfy.
func (o *Observer) consume(w watch.Interface) {
	for ev := range w.ResultChan() {
		if ev.Type == watch.Bookmark {
			continue
		}
		o.mu.Lock()
		switch obj := ev.Object.(type) {
		case *metav1.Status:
			o.problems = append(o.problems, fmt.Sprintf("watch error at %s: %s", time.Now().Format(time.StampMilli), obj.Message))
		case *corev1.Endpoints:
			ips := map[string]bool{}
			for _, s := range obj.Subsets {
				for _, a := range s.Addresses {
					ips[a.IP] = true
				}
				for _, a := range s.NotReadyAddresses {
					ips[a.IP] = false
				}
			}
			if ev.Type == watch.Deleted {
				ips = nil
			}
			o.endpointsReady[obj.Name] = ips
		case *corev1.Pod:
			o.podsReady[obj.Name] = endpointrules.IsPodReady(obj)
		case *discoveryv1.EndpointSlice:
			svc := obj.Labels[discoveryv1.LabelServiceName]
			if o.slices[svc] == nil {
				o.slices[svc] = map[string]map[string]bool{}
			}
			ips := map[string]bool{}
			for _, e := range obj.Endpoints {
				ips[e.Addresses[0]] = ptr.Deref(e.Conditions.Ready, false)
			}
			if ev.Type == watch.Deleted {
				delete(o.slices[svc], obj.Name)
			} else {
				o.slices[svc][obj.Name] = ips
			}
		}
		o.resolveLocked(time.Now())
		o.mu.Unlock()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.problems = append(o.problems, "a watch ended at "+time.Now().Format(time.StampMilli))
}

func (o *Observer) resolveLocked(now time.Time) {
	kept := o.probes[:0]
	for _, p := range o.probes {
		if p.cond() {
			p.at = now
			close(p.done)
			continue
		}
		kept = append(kept, p)
	}
	o.probes = kept
}

// Probe registers a condition (evaluated under the observer's lock); it may resolve at once.
func (o *Observer) Probe(cond func() bool) *Probe {
	p := &Probe{cond: cond, done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.probes = append(o.probes, p)
	return p
}

// Wait returns when the probe resolved, or zero after timeout.
func (p *Probe) Wait(timeout time.Duration) time.Time {
	select {
	case <-p.done:
		return p.at
	case <-time.After(timeout):
		return time.Time{}
	}
}

// Await waits up to timeout for cond and returns when it became true (zero on timeout).
func (o *Observer) Await(timeout time.Duration, cond func() bool) time.Time {
	p := o.Probe(cond)
	o.mu.Lock()
	o.resolveLocked(time.Now())
	o.mu.Unlock()
	return p.Wait(timeout)
}

// PublishedAnyLocked says whether any Endpoints or EndpointSlice has been seen; call it from a
// probe's condition.
func (o *Observer) PublishedAnyLocked() bool { return len(o.endpointsReady)+len(o.slices) > 0 }

// EndpointsReadyLocked says whether ip is in the Service's Endpoints and whether as ready;
// call it from a probe's condition.
func (o *Observer) EndpointsReadyLocked(svc, ip string) (ready, known bool) {
	ready, known = o.endpointsReady[svc][ip]
	return ready, known
}

// PodReadyLocked says whether the pod was last seen ready, and whether it was seen at all since
// Follow; call it from a probe's condition.
func (o *Observer) PodReadyLocked(name string) (ready, known bool) {
	ready, known = o.podsReady[name]
	return ready, known
}

// SliceReadyLocked says whether ip is published ready in the Service's slices; call it from
// a probe's condition.
func (o *Observer) SliceReadyLocked(svc, ip string) bool {
	for _, ips := range o.slices[svc] {
		if ready, ok := ips[ip]; ok {
			return ready
		}
	}
	return false
}

// ConvergedLocked says whether each of the Services (named by name(0..services-1)) has
// podsPerService ready addresses in both APIs; call it from a probe's condition.
func (o *Observer) ConvergedLocked(name func(int) string, services, podsPerService int) bool {
	for i := range services {
		if o.readyLocked(name(i)) != [2]int{podsPerService, podsPerService} {
			return false
		}
	}
	return true
}

// readyLocked counts the Service's ready addresses in its Endpoints and in its slices.
func (o *Observer) readyLocked(svc string) [2]int {
	var ready [2]int
	for _, r := range o.endpointsReady[svc] {
		if r {
			ready[0]++
		}
	}
	for _, ips := range o.slices[svc] {
		for _, r := range ips {
			if r {
				ready[1]++
			}
		}
	}
	return ready
}

// Summary says how much the Observer has seen and, of the Services named name(0..services-1),
// how many lack podsPerService ready addresses in either API, with the first few: for timeout
// messages.
func (o *Observer) Summary(name func(int) string, services, podsPerService int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var off []string
	for i := range services {
		svc := name(i)
		if ready := o.readyLocked(svc); ready != [2]int{podsPerService, podsPerService} {
			off = append(off, fmt.Sprintf("%s (Endpoints %d ready, %d slices %d ready)", svc, ready[0], len(o.slices[svc]), ready[1]))
		}
	}
	return fmt.Sprintf("%d Endpoints and slices of %d Services seen; %d Services not converged: %s; watches started again: %d; watch problems: %q",
		len(o.endpointsReady), len(o.slices), len(off), strings.Join(off[:min(len(off), 5)], ", "), o.Rewatches(), o.problems)
}
