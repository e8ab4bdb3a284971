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
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/published"
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
	obs := published.NewObserver()
	for _, list := range []client.ObjectList{&corev1.EndpointsList{}, &discoveryv1.EndpointSliceList{}} {
		w, err := c.Watch(ctx, list, client.InNamespace(ns))
		if err != nil {
			return nil, fmt.Errorf("watch %T: %w", list, err)
		}
		defer w.Stop()
		go obs.Consume(w)
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
	converged := obs.Await(5*time.Minute, func() bool { return obs.ConvergedLocked(endpointsServiceName, shape.services, shape.podsPerService) })
	if err := kcm.exited(); err != nil {
		return nil, err
	}
	if converged.IsZero() {
		return nil, fmt.Errorf("kube-controller-manager not converged after 5m: %s", obs.Summary())
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
func flipReadiness(ctx context.Context, c client.Client, obs *published.Observer, pods []*corev1.Pod, flips int) (ep, slice, both []time.Duration, err error) {
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
		epProbe := obs.Probe(func() bool { got, known := obs.EndpointsReadyLocked(svc, ip); return known && got == ready })
		sliceProbe := obs.Probe(func() bool { return obs.SliceReadyLocked(svc, ip) == ready })
		start := time.Now()
		if err := c.Status().Update(ctx, pod); err != nil {
			return nil, nil, nil, fmt.Errorf("flip %s: %w", pod.Name, err)
		}
		epAt, sliceAt := epProbe.Wait(flipTimeout), sliceProbe.Wait(flipTimeout)
		if epAt.IsZero() || sliceAt.IsZero() {
			return nil, nil, nil, fmt.Errorf("flip of %s to ready=%v not published within %s", pod.Name, ready, flipTimeout)
		}
		ep = append(ep, epAt.Sub(start))
		slice = append(slice, sliceAt.Sub(start))
		both = append(both, max(epAt.Sub(start), sliceAt.Sub(start)))
	}
	return ep, slice, both, nil
}
