package endpoints

import (
	"context"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/controllers/cachesync"
	"github.com/kube-clusterip/kube-clusterip/test/published"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Benchmark shape: 1000 Services × 10 ready pods.
const (
	benchServices   = 1000
	benchPodsPerSvc = 10
	benchFlips      = 200
	benchDefaultQPS = 1000
)

// BenchmarkConverge measures, on a real control plane, how long our controllers take to publish
// Endpoints and EndpointSlices for 1000 Services × 10 ready pods from empty, then the latency from
// one pod's readiness change to both APIs showing it (p50/p99 over 200 flips, 100 ms apart). The
// manager's client QPS is $BENCH_QPS (default 1000). cache-sync-s is the part of converge-s
// before the manager's caches were in sync, first-published-s the part before the first object
// was seen published; apiserver-, etcd- and controller-cpu-s are the CPU time each used during
// converge-s (controller: this process, observer included). make bench-compare runs it beside
// kube-controller-manager and the floor (BenchmarkConvergeFloor).
//
//	go test ./controllers/endpoints -run '^$' -bench BenchmarkConverge
func BenchmarkConverge(b *testing.B) {
	bench := startConvergeBench(b)
	mgrCfg := published.ComparedClientConfig(bench.cfg, bench.qps)
	// As deployed (main.go, config/manager/manager.yaml): responses without gzip (in mgrCfg), slim
	// cached pods and nodes, a cache that says it is in sync without polling, and garbage
	// collected at GOGC=400.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:     clientgoscheme.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		NewCache:   cachesync.New,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:  {Transform: PodCacheTransform},
			&corev1.Node{}: {Transform: NodeCacheTransform},
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := SetupWithManager(mgr, Options{}); err != nil {
		b.Fatal(err)
	}
	mgrCtx, stopMgr := context.WithCancel(bench.ctx)
	mgrDone := make(chan error, 1)
	// The manager starts its other runnables once the caches it has informers for (pods,
	// Services, EndpointSlices: the indexes ask for them) are in sync, so this one tells how much
	// of the convergence was reading the cluster, which the floor does not do.
	var started time.Time
	cacheSynced := make(chan time.Duration, 1)
	if err := mgr.Add(manager.RunnableFunc(func(context.Context) error {
		cacheSynced <- time.Since(started)
		return nil
	})); err != nil {
		b.Fatal(err)
	}

	workload := published.Workload{Services: benchServices, PodsPerService: benchPodsPerSvc, Flips: benchFlips, Logf: b.Logf,
		CPU: published.ConvergeMeters(published.SelfCPU())}
	result, err := workload.Run(bench.ctx, bench.fixtures, func() error {
		b.ResetTimer()
		started = time.Now()
		go func() { mgrDone <- mgr.Start(mgrCtx) }()
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}

	stopMgr()
	if err := <-mgrDone; err != nil {
		b.Errorf("manager: %v", err)
	}
	bench.report(result)
	b.ReportMetric((<-cacheSynced).Seconds(), "cache-sync-s")
}

// BenchmarkConvergeFloor runs BenchmarkConverge's workload against published.FloorWriter, a
// minimal writer that publishes precomputed objects with no cache to fill: the least any
// controller needs on this API server. Run both in one invocation to get ours ÷ floor from one
// run on the same machine.
//
//	go test ./controllers/endpoints -run '^$' -bench 'BenchmarkConverge(Floor)?$' -count 3
func BenchmarkConvergeFloor(b *testing.B) { benchmarkFloor(b, false) }

// BenchmarkConvergeFloorReading is BenchmarkConvergeFloor with a writer that first streams the
// 10,000 pods, as an informer reads them, and keeps nothing: the least a controller that must
// know the pods before it publishes needs.
func BenchmarkConvergeFloorReading(b *testing.B) { benchmarkFloor(b, true) }

func benchmarkFloor(b *testing.B, readPods bool) {
	bench := startConvergeBench(b)
	floor, err := published.NewFloorWriter(bench.cfg, bench.qps, readPods)
	if err != nil {
		b.Fatal(err)
	}
	workload := published.Workload{Services: benchServices, PodsPerService: benchPodsPerSvc, Flips: benchFlips,
		BeforeStart: floor.Prepare, Logf: b.Logf, CPU: published.ConvergeMeters(published.SelfCPU())}
	result, err := workload.Run(bench.ctx, bench.fixtures, func() error {
		b.ResetTimer()
		return floor.Start(bench.ctx)
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	bench.report(result)
}

// convergeBench is a fresh control plane for one endpoints benchmark, stopped with the benchmark.
type convergeBench struct {
	b        *testing.B
	ctx      context.Context
	cfg      *rest.Config
	fixtures client.WithWatch // unthrottled: fixtures are not what we measure
	qps      int              // the client QPS of what is measured: $BENCH_QPS, default 1000
}

func startConvergeBench(b *testing.B) *convergeBench {
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
	b.Cleanup(func() {
		if err := env.Stop(); err != nil {
			b.Errorf("stop control plane: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	fixtureCfg := rest.CopyConfig(cfg)
	fixtureCfg.QPS, fixtureCfg.Burst = -1, 0
	fixtures, err := client.NewWithWatch(fixtureCfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	return &convergeBench{b: b, ctx: ctx, cfg: cfg, fixtures: fixtures, qps: qps}
}

func (c *convergeBench) report(result published.Result) {
	for name, value := range result.Metrics() {
		c.b.ReportMetric(value, name)
	}
	c.b.ReportMetric(float64(c.qps), "client-qps")
}
