// Package published follows what an endpoints controller publishes (Endpoints and
// EndpointSlices, through watches) and tells when a condition on it became true: the clock of
// the endpoints benchmarks. It also holds their workload (Workload), so that ours and
// upstream's run the same one.
package published

import (
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

// Observer follows Endpoints and EndpointSlices through watches and resolves probes
// (conditions on what is published) at the moment an event makes them true.
type Observer struct {
	mu             sync.Mutex
	endpointsReady map[string]map[string]bool            // Service → IP → ready
	slices         map[string]map[string]map[string]bool // Service → slice → IP → ready
	probes         []*Probe
}

// Probe is a condition waiting to become true.
type Probe struct {
	cond func() bool
	at   time.Time
	done chan struct{}
}

// NewObserver returns an Observer; feed it watches with Consume.
func NewObserver() *Observer {
	return &Observer{endpointsReady: map[string]map[string]bool{}, slices: map[string]map[string]map[string]bool{}}
}

// Consume applies a watch's events until it ends and resolves the probes they satisfy.
func (o *Observer) Consume(w watch.Interface) {
	for ev := range w.ResultChan() {
		o.mu.Lock()
		switch obj := ev.Object.(type) {
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

// EndpointsReadyLocked says whether ip is in the Service's Endpoints and whether as ready;
// call it from a probe's condition.
func (o *Observer) EndpointsReadyLocked(svc, ip string) (ready, known bool) {
	ready, known = o.endpointsReady[svc][ip]
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
		svc := name(i)
		ready := 0
		for _, r := range o.endpointsReady[svc] {
			if r {
				ready++
			}
		}
		if ready != podsPerService {
			return false
		}
		ready = 0
		for _, ips := range o.slices[svc] {
			for _, r := range ips {
				if r {
					ready++
				}
			}
		}
		if ready != podsPerService {
			return false
		}
	}
	return true
}

// Summary says how much the Observer has seen, for timeout messages.
func (o *Observer) Summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("%d Endpoints and slices of %d Services seen", len(o.endpointsReady), len(o.slices))
}
