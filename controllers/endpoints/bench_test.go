package endpoints

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/test/published"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Benchmark shape, as in DESIGN.md: 1000 Services × 10 ready pods.
const (
	benchServices    = 1000
	benchPodsPerSvc  = 10
	benchFlips       = 200
	benchDefaultQPS  = 1000
	benchFlipTimeout = 10 * time.Second
	// benchFlipInterval spaces the flips; the first one comes after the same pause.
	benchFlipInterval = 100 * time.Millisecond
)

// BenchmarkConverge measures, on a real control plane, how long our controllers take to publish
// Endpoints and EndpointSlices for 1000 Services × 10 ready pods from empty, then the latency from
// one pod's readiness change to both APIs showing it (p50/p99 over 200 flips, 100 ms apart). The manager's client
// QPS is $BENCH_QPS (default 1000); kube-controller-manager v1.37.2 on this machine: 50.8 s at QPS
// 20, 17.4 s at QPS 1000, flip p50 ~20 ms.
//
//	go test ./controllers/endpoints -run '^$' -bench BenchmarkConverge
func BenchmarkConverge(b *testing.B) {
	if _, err := testenv.Assets(); err != nil {
		b.Skip(err.Error())
	}
	qps := benchDefaultQPS
	if v, err := strconv.Atoi(os.Getenv("BENCH_QPS")); err == nil && v > 0 {
		qps = v
	}

	ctrl.SetLogger(logr.Discard())
	env := testenv.New()
	// Outside a Ginkgo suite the control plane's logs would flood the benchmark's output.
	env.ControlPlane.GetAPIServer().Out, env.ControlPlane.GetAPIServer().Err = io.Discard, io.Discard
	if etcd := env.ControlPlane.Etcd; etcd != nil {
		etcd.Out, etcd.Err = io.Discard, io.Discard
	}
	cfg, err := env.Start()
	if err != nil {
		b.Fatalf("start control plane: %v", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			b.Errorf("stop control plane: %v", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	fixtureCfg := rest.CopyConfig(cfg)
	fixtureCfg.QPS, fixtureCfg.Burst = -1, 0 // unthrottled: fixtures are not what we measure
	c, err := client.NewWithWatch(fixtureCfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	ns := "bench"
	pods := createBenchFixtures(ctx, b, c, ns)

	obs := published.NewObserver()
	for _, list := range []client.ObjectList{&corev1.EndpointsList{}, &discoveryv1.EndpointSliceList{}} {
		w, err := c.Watch(ctx, list, client.InNamespace(ns))
		if err != nil {
			b.Fatalf("watch %T: %v", list, err)
		}
		go obs.Consume(w)
	}

	mgrCfg := rest.CopyConfig(cfg)
	mgrCfg.QPS, mgrCfg.Burst = float32(qps), 2*qps
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:     clientgoscheme.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := SetupWithManager(mgr, Options{}); err != nil {
		b.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)

	b.ResetTimer()
	start := time.Now()
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	converged := obs.Await(5*time.Minute, func() bool { return obs.ConvergedLocked(benchServiceName, benchServices, benchPodsPerSvc) })
	if converged.IsZero() {
		b.Fatalf("not converged after 5m: %s", obs.Summary())
	}
	convergeTime := converged.Sub(start)

	epLat, sliceLat, bothLat := flipReadiness(ctx, b, c, obs, pods)
	b.StopTimer()

	stopMgr()
	if err := <-mgrDone; err != nil {
		b.Errorf("manager: %v", err)
	}
	b.ReportMetric(convergeTime.Seconds(), "converge-s")
	b.ReportMetric(ms(percentile(bothLat, 50)), "flip-p50-ms")
	b.ReportMetric(ms(percentile(bothLat, 99)), "flip-p99-ms")
	b.ReportMetric(ms(percentile(epLat, 50)), "endpoints-p50-ms")
	b.ReportMetric(ms(percentile(epLat, 99)), "endpoints-p99-ms")
	b.ReportMetric(ms(percentile(sliceLat, 50)), "slice-p50-ms")
	b.ReportMetric(ms(percentile(sliceLat, 99)), "slice-p99-ms")
	b.ReportMetric(float64(qps), "client-qps")
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

// createBenchFixtures creates the nodes, Services and ready pods (in parallel), returning the pods.
func createBenchFixtures(ctx context.Context, b *testing.B, c client.Client, ns string) []*corev1.Pod {
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	for node, zone := range map[string]string{"node-a": "zone-a", "node-b": "zone-b"} {
		must(c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}))
	}
	pods := make([]*corev1.Pod, benchServices*benchPodsPerSvc)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for i := range work {
				if err := createBenchService(ctx, c, ns, i, pods); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range benchServices {
		work <- i
	}
	close(work)
	wg.Wait()
	must(firstErr)
	return pods
}

func benchServiceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func createBenchService(ctx context.Context, c client.Client, ns string, i int, pods []*corev1.Pod) error {
	selector := map[string]string{"svc": benchServiceName(i)}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: benchServiceName(i), Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	for j := range benchPodsPerSvc {
		n := i*benchPodsPerSvc + j
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

// flipReadiness toggles the readiness of random pods, one at a time, and measures how long each
// change takes to reach the Endpoints, the EndpointSlices, and both.
func flipReadiness(ctx context.Context, b *testing.B, c client.Client, obs *published.Observer, pods []*corev1.Pod) (ep, slice, both []time.Duration) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Pace the flips as independent changes: back to back they would measure how fast the
	// client's rate limiter refills after convergence (at QPS 20, one token per 50 ms), not how
	// fast one change propagates.
	pace := time.NewTicker(benchFlipInterval)
	defer pace.Stop()
	for range benchFlips {
		<-pace.C
		pod := pods[rng.IntN(len(pods))]
		ready := !IsPodReady(pod)
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
			b.Fatalf("flip %s: %v", pod.Name, err)
		}
		epAt, sliceAt := epProbe.Wait(benchFlipTimeout), sliceProbe.Wait(benchFlipTimeout)
		if epAt.IsZero() || sliceAt.IsZero() {
			b.Fatalf("flip of %s to ready=%v not published within %s", pod.Name, ready, benchFlipTimeout)
		}
		ep = append(ep, epAt.Sub(start))
		slice = append(slice, sliceAt.Sub(start))
		both = append(both, max(epAt.Sub(start), sliceAt.Sub(start)))
	}
	return ep, slice, both
}
