package published

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

const (
	workloadNamespace = "bench"
	convergeTimeout   = 5 * time.Minute
	flipTimeout       = 10 * time.Second
	// flipInterval spaces the flips; the first one comes after the same pause.
	flipInterval = 100 * time.Millisecond
)

// Workload is the endpoints benchmark: Services × ready pods created from empty, then readiness
// flips of random pods. BenchmarkConverge and hack/bench-compare both run it, so ours and
// upstream's controllers are measured alike.
type Workload struct {
	Services, PodsPerService, Flips int
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
	// BeforeStart, if set, is called with the pods once the fixtures exist, before the clock
	// starts (FloorWriter.Prepare).
	BeforeStart func(ctx context.Context, pods []*corev1.Pod) error
	// CPU, if set, names the processes whose CPU time from the start to convergence is
	// reported, each as the metric "<name>-cpu-s".
	CPU map[string]CPUMeter
}

// Result is what one run of the Workload measured.
type Result struct {
	// Converge is from just before the controllers start to every pod published ready in both APIs.
	Converge time.Duration
	// FirstPublished is from the same start to the first Endpoints or EndpointSlice seen: what a
	// controller spends reading the cluster before it writes. Converge minus it is the publishing.
	FirstPublished time.Duration
	// Per flip, until the Endpoints, the EndpointSlices and both showed it.
	Endpoints, Slices, Both []time.Duration
	// Per flip, where the time of Both went: until the pod's status write returned, until a
	// watcher of pods (the benchmark's own) saw the change, and from then until both APIs showed
	// it. The first two are the API server's alone; only the last is the controller's.
	PodWritten, PodSeen, AfterPodSeen []time.Duration
	// ConvergeCPU is the CPU time each of the Workload's CPU meters used during Converge, in
	// seconds.
	ConvergeCPU map[string]float64
}

// Metrics returns the figures keyed as BenchmarkConverge reports them.
func (r Result) Metrics() map[string]float64 {
	m := map[string]float64{
		"converge-s":        r.Converge.Seconds(),
		"first-published-s": r.FirstPublished.Seconds(),
		"publishing-s":      (r.Converge - r.FirstPublished).Seconds(),
		"flip-p50-ms":       Milliseconds(Percentile(r.Both, 50)),
		"flip-p99-ms":       Milliseconds(Percentile(r.Both, 99)),
		"endpoints-p50-ms":  Milliseconds(Percentile(r.Endpoints, 50)),
		"endpoints-p99-ms":  Milliseconds(Percentile(r.Endpoints, 99)),
		"slice-p50-ms":      Milliseconds(Percentile(r.Slices, 50)),
		"slice-p99-ms":      Milliseconds(Percentile(r.Slices, 99)),

		"flip-pod-written-p50-ms":    Milliseconds(Percentile(r.PodWritten, 50)),
		"flip-pod-seen-p50-ms":       Milliseconds(Percentile(r.PodSeen, 50)),
		"flip-after-pod-seen-p50-ms": Milliseconds(Percentile(r.AfterPodSeen, 50)),
	}
	for name, seconds := range r.ConvergeCPU {
		m[name+"-cpu-s"] = seconds
	}
	return m
}

// Run creates the fixtures through c (which should be unthrottled: fixtures are not what we
// measure), follows what is published, calls startControllers and measures the convergence and
// then the flips.
func (w Workload) Run(ctx context.Context, c client.WithWatch, startControllers func() error) (Result, error) {
	w.logf("creating %d Services x %d ready pods", w.Services, w.PodsPerService)
	pods, err := w.createFixtures(ctx, c)
	if err != nil {
		return Result{}, fmt.Errorf("fixtures: %w", err)
	}
	if w.BeforeStart != nil {
		if err := w.BeforeStart(ctx, pods); err != nil {
			return Result{}, err
		}
	}
	obs := NewObserver()
	for _, list := range []client.ObjectList{&corev1.EndpointsList{}, &discoveryv1.EndpointSliceList{}} {
		watch, err := obs.Follow(ctx, c, list, workloadNamespace)
		if err != nil {
			return Result{}, fmt.Errorf("follow %T: %w", list, err)
		}
		defer watch.Stop()
	}

	firstPublished := obs.Probe(obs.PublishedAnyLocked)
	cpuAtStart, err := readCPU(w.CPU)
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	if err := startControllers(); err != nil {
		return Result{}, err
	}
	converged := obs.Await(convergeTimeout, func() bool { return obs.ConvergedLocked(ServiceName, w.Services, w.PodsPerService) })
	if converged.IsZero() {
		return Result{}, fmt.Errorf("not converged after %s: %s; the API server holds %s", convergeTimeout,
			obs.Summary(ServiceName, w.Services, w.PodsPerService), published(ctx, c))
	}
	cpuAtConverged, err := readCPU(w.CPU)
	if err != nil {
		return Result{}, err
	}
	r := Result{Converge: converged.Sub(start), FirstPublished: firstPublished.Wait(convergeTimeout).Sub(start), ConvergeCPU: map[string]float64{}}
	for name, seconds := range cpuAtConverged {
		r.ConvergeCPU[name] = seconds - cpuAtStart[name]
	}
	w.logf("converged in %s, the first object published after %s; %d readiness flips", r.Converge.Round(time.Millisecond),
		r.FirstPublished.Round(time.Millisecond), w.Flips)
	// Followed only now: the converge has no pod events, and this watcher should not cost it.
	podWatch, err := obs.Follow(ctx, c, &corev1.PodList{}, workloadNamespace)
	if err != nil {
		return Result{}, fmt.Errorf("follow pods: %w", err)
	}
	defer podWatch.Stop()
	if err := w.flipReadiness(ctx, c, obs, pods, &r); err != nil {
		return Result{}, err
	}
	if n := obs.Rewatches(); n > 0 {
		// A figure taken across a new watch includes the time to start it.
		w.logf("the API server ended the observer's watches %d times; it went on where it left off", n)
	}
	return r, nil
}

// readCPU reads every meter.
func readCPU(meters map[string]CPUMeter) (map[string]float64, error) {
	read := map[string]float64{}
	for name, meter := range meters {
		seconds, err := meter()
		if err != nil {
			return nil, fmt.Errorf("CPU time of %s: %w", name, err)
		}
		read[name] = seconds
	}
	return read, nil
}

func (w Workload) logf(format string, args ...any) {
	if w.Logf != nil {
		w.Logf(format, args...)
	}
}

// nodeZones are the Workload's nodes and their zones.
var nodeZones = map[string]string{"node-a": "zone-a", "node-b": "zone-b"}

// ServiceName names the Workload's i-th Service.
func ServiceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// createFixtures creates the namespace, two nodes in two zones, and the Services with their ready
// pods (in parallel), returning the pods.
func (w Workload) createFixtures(ctx context.Context, c client.Client) ([]*corev1.Pod, error) {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNamespace}}); err != nil {
		return nil, err
	}
	for node, zone := range nodeZones {
		if err := c.Create(ctx, kit.MakeNode(node).Zone(zone).Obj()); err != nil {
			return nil, err
		}
	}
	pods := make([]*corev1.Pod, w.Services*w.PodsPerService)
	err := Parallel(w.Services, func(i int) error { return w.createService(ctx, c, i, pods) })
	return pods, err
}

func (w Workload) createService(ctx context.Context, c client.Client, i int, pods []*corev1.Pod) error {
	selector := map[string]string{"svc": ServiceName(i)}
	svc := kit.MakeService(ServiceName(i), workloadNamespace).Selector(selector).TCPPort("http", 80, 8080).Obj()
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	for j := range w.PodsPerService {
		n := i*w.PodsPerService + j
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", svc.Name, j), Namespace: workloadNamespace, Labels: selector},
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

// flipReadiness toggles the readiness of random pods, one at a time, and records in r how long
// each change takes to reach the Endpoints, the EndpointSlices, and both.
func (w Workload) flipReadiness(ctx context.Context, c client.Client, obs *Observer, pods []*corev1.Pod, r *Result) error {
	rng := rand.New(rand.NewPCG(1, 2))
	// Pace the flips as independent changes: back to back they would measure how fast the
	// client's rate limiter refills after convergence (at QPS 20, one token per 50 ms), not how
	// fast one change propagates.
	pace := time.NewTicker(flipInterval)
	defer pace.Stop()
	for range w.Flips {
		<-pace.C
		pod := pods[rng.IntN(len(pods))]
		ready := !endpointrules.IsPodReady(pod)
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
		svc, ip := pod.Labels["svc"], pod.Status.PodIP
		podProbe := obs.Probe(func() bool { got, known := obs.PodReadyLocked(pod.Name); return known && got == ready })
		epProbe := obs.Probe(func() bool { got, known := obs.EndpointsReadyLocked(svc, ip); return known && got == ready })
		sliceProbe := obs.Probe(func() bool { return obs.SliceReadyLocked(svc, ip) == ready })
		start := time.Now()
		if err := c.Status().Update(ctx, pod); err != nil {
			return fmt.Errorf("flip %s: %w", pod.Name, err)
		}
		written := time.Now()
		podAt, epAt, sliceAt := podProbe.Wait(flipTimeout), epProbe.Wait(flipTimeout), sliceProbe.Wait(flipTimeout)
		if podAt.IsZero() || epAt.IsZero() || sliceAt.IsZero() {
			return fmt.Errorf("flip of %s to ready=%v not published within %s (pod seen: %v)", pod.Name, ready, flipTimeout, !podAt.IsZero())
		}
		both := epAt
		if sliceAt.After(both) {
			both = sliceAt
		}
		r.Endpoints = append(r.Endpoints, epAt.Sub(start))
		r.Slices = append(r.Slices, sliceAt.Sub(start))
		r.Both = append(r.Both, both.Sub(start))
		r.PodWritten = append(r.PodWritten, written.Sub(start))
		r.PodSeen = append(r.PodSeen, podAt.Sub(start))
		r.AfterPodSeen = append(r.AfterPodSeen, both.Sub(podAt))
	}
	return nil
}

// Parallel runs do(0..n-1) on 16 workers and returns the first error: how the benchmarks create
// thousands of fixtures quickly.
func Parallel(n int, do func(int) error) error {
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

// Percentile returns the p-th percentile (nearest rank) of ds, zero if empty.
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}

// Milliseconds is d in milliseconds, to the microsecond.
func Milliseconds(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// published counts the Endpoints and EndpointSlices the API server holds in the workload's
// namespace, for timeout messages.
func published(ctx context.Context, c client.Client) string {
	var endpoints corev1.EndpointsList
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &endpoints, client.InNamespace(workloadNamespace)); err != nil {
		return err.Error()
	}
	if err := c.List(ctx, &slices, client.InNamespace(workloadNamespace)); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d Endpoints and %d EndpointSlices", len(endpoints.Items), len(slices.Items))
}
