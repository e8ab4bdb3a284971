package main

// The endpoints workload of controllers/endpoints/bench_test.go (BenchmarkConverge), run against
// upstream kube-controller-manager: the same fixtures, watches and readiness flips, copied here
// because that file is a _test.go of another package.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// endpointsShape is the size of the endpoints workload.
type endpointsShape struct {
	services, podsPerService, flips, qps int
}

const (
	flipTimeout  = 10 * time.Second
	flipInterval = 100 * time.Millisecond
)

// runKubeControllerManager measures upstream's endpoint controllers on a fresh control plane:
// converge from empty, then readiness flips; figures keyed like BenchmarkConverge's metrics.
func runKubeControllerManager(ctx context.Context, o options, shape endpointsShape) (map[string]float64, error) {
	cp, err := startControlPlane(o.assets, o.workDir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	c, err := client.NewWithWatch(cp.unthrottled(), client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return nil, err
	}
	ns := "bench"
	logf("kube-controller-manager: creating %d Services x %d ready pods", shape.services, shape.podsPerService)
	pods, err := createEndpointsFixtures(ctx, c, ns, shape)
	if err != nil {
		return nil, fmt.Errorf("fixtures: %w", err)
	}
	obs := newPublishedObserver()
	for _, list := range []client.ObjectList{&corev1.EndpointsList{}, &discoveryv1.EndpointSliceList{}} {
		w, err := c.Watch(ctx, list, client.InNamespace(ns))
		if err != nil {
			return nil, fmt.Errorf("watch %T: %w", list, err)
		}
		defer w.Stop()
		go obs.consume(w)
	}

	start := time.Now()
	kcm, err := startProcess(o.workDir, filepath.Join(o.upstream, "kube-controller-manager"),
		"--kubeconfig="+cp.kubeconfig,
		"--controllers=endpoint,endpointslice,endpointslicemirroring",
		"--leader-elect=false",
		"--secure-port=0",
		"--kube-api-qps="+strconv.Itoa(shape.qps),
		"--kube-api-burst="+strconv.Itoa(2*shape.qps), // as our benchmark's manager
		"--v=1")
	if err != nil {
		return nil, err
	}
	defer kcm.stop()
	converged := obs.await(5*time.Minute, func() bool { return obs.convergedLocked(shape.services, shape.podsPerService) })
	if err := kcm.exited(); err != nil {
		return nil, err
	}
	if converged.IsZero() {
		return nil, fmt.Errorf("kube-controller-manager not converged after 5m: %s", obs.summary())
	}
	convergeTime := converged.Sub(start)
	logf("kube-controller-manager: converged in %s; %d readiness flips", convergeTime.Round(time.Millisecond), shape.flips)
	ep, slice, both, err := flipReadiness(ctx, c, obs, pods, shape.flips)
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"converge-s":       convergeTime.Seconds(),
		"flip-p50-ms":      ms(percentile(both, 50)),
		"flip-p99-ms":      ms(percentile(both, 99)),
		"endpoints-p50-ms": ms(percentile(ep, 50)),
		"endpoints-p99-ms": ms(percentile(ep, 99)),
		"slice-p50-ms":     ms(percentile(slice, 50)),
		"slice-p99-ms":     ms(percentile(slice, 99)),
		"client-qps":       float64(shape.qps),
	}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

// createEndpointsFixtures creates the nodes, Services and ready pods (in parallel), returning the pods.
func createEndpointsFixtures(ctx context.Context, c client.Client, ns string, shape endpointsShape) ([]*corev1.Pod, error) {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}
	for node, zone := range map[string]string{"node-a": "zone-a", "node-b": "zone-b"} {
		if err := c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}); err != nil {
			return nil, err
		}
	}
	pods := make([]*corev1.Pod, shape.services*shape.podsPerService)
	err := parallel(shape.services, func(i int) error { return createEndpointsService(ctx, c, ns, i, shape.podsPerService, pods) })
	return pods, err
}

// parallel runs do(0..n-1) on 16 workers and returns the first error.
func parallel(n int, do func(int) error) error {
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := do(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return firstErr
}

func endpointsServiceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func createEndpointsService(ctx context.Context, c client.Client, ns string, i, podsPerService int, pods []*corev1.Pod) error {
	selector := map[string]string{"svc": endpointsServiceName(i)}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: endpointsServiceName(i), Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	for j := range podsPerService {
		n := i*podsPerService + j
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", svc.Name, j), Namespace: ns, Labels: selector},
			Spec: corev1.PodSpec{NodeName: []string{"node-a", "node-b"}[j%2],
				Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			return err
		}
		ip := fmt.Sprintf("10.%d.%d.%d", 100+n/65536, n/256%256, n%256)
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			return err
		}
		pods[n] = pod
	}
	return nil
}

func isPodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// flipReadiness toggles the readiness of random pods, one at a time, and measures how long each
// change takes to reach the Endpoints, the EndpointSlices, and both.
func flipReadiness(ctx context.Context, c client.Client, obs *publishedObserver, pods []*corev1.Pod, flips int) (ep, slice, both []time.Duration, err error) {
	rng := rand.New(rand.NewPCG(1, 2))
	pace := time.NewTicker(flipInterval)
	defer pace.Stop()
	for range flips {
		<-pace.C
		pod := pods[rng.IntN(len(pods))]
		ready := !isPodReady(pod)
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
		svc, ip := pod.Labels["svc"], pod.Status.PodIP
		epProbe := obs.probe(func() bool { return obs.endpointsReady[svc][ip] == ready && obs.endpointsKnown(svc, ip) })
		sliceProbe := obs.probe(func() bool { return obs.sliceReadyLocked(svc, ip) == ready })
		start := time.Now()
		if err := c.Status().Update(ctx, pod); err != nil {
			return nil, nil, nil, fmt.Errorf("flip %s: %w", pod.Name, err)
		}
		epAt, sliceAt := epProbe.wait(flipTimeout), sliceProbe.wait(flipTimeout)
		if epAt.IsZero() || sliceAt.IsZero() {
			return nil, nil, nil, fmt.Errorf("flip of %s to ready=%v not published within %s", pod.Name, ready, flipTimeout)
		}
		ep = append(ep, epAt.Sub(start))
		slice = append(slice, sliceAt.Sub(start))
		both = append(both, max(epAt.Sub(start), sliceAt.Sub(start)))
	}
	return ep, slice, both, nil
}

// publishedObserver follows Endpoints and EndpointSlices through watches and resolves probes
// (conditions on what is published) at the moment an event makes them true.
type publishedObserver struct {
	mu             sync.Mutex
	endpointsReady map[string]map[string]bool            // Service → IP → ready
	slices         map[string]map[string]map[string]bool // Service → slice → IP → ready
	probes         []*probe
}

type probe struct {
	cond func() bool
	at   time.Time
	done chan struct{}
}

func newPublishedObserver() *publishedObserver {
	return &publishedObserver{endpointsReady: map[string]map[string]bool{}, slices: map[string]map[string]map[string]bool{}}
}

func (o *publishedObserver) consume(w watch.Interface) {
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

func (o *publishedObserver) resolveLocked(now time.Time) {
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

// probe registers a condition (evaluated under the observer's lock); it may resolve at once.
func (o *publishedObserver) probe(cond func() bool) *probe {
	p := &probe{cond: cond, done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.probes = append(o.probes, p)
	return p
}

// wait returns when the probe resolved, or zero after timeout.
func (p *probe) wait(timeout time.Duration) time.Time {
	select {
	case <-p.done:
		return p.at
	case <-time.After(timeout):
		return time.Time{}
	}
}

func (o *publishedObserver) await(timeout time.Duration, cond func() bool) time.Time {
	p := o.probe(cond)
	o.mu.Lock()
	o.resolveLocked(time.Now())
	o.mu.Unlock()
	return p.wait(timeout)
}

func (o *publishedObserver) endpointsKnown(svc, ip string) bool {
	_, ok := o.endpointsReady[svc][ip]
	return ok
}

// sliceReadyLocked: whether ip is published ready in the Service's slices.
func (o *publishedObserver) sliceReadyLocked(svc, ip string) bool {
	for _, ips := range o.slices[svc] {
		if ready, ok := ips[ip]; ok {
			return ready
		}
	}
	return false
}

func (o *publishedObserver) convergedLocked(services, podsPerService int) bool {
	for i := range services {
		svc := endpointsServiceName(i)
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

func (o *publishedObserver) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("%d Endpoints and slices of %d Services seen", len(o.endpointsReady), len(o.slices))
}
