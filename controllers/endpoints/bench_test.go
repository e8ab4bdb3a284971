package endpoints

import (
	"context"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/test/published"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Benchmark shape, as in DESIGN.md: 1000 Services × 10 ready pods.
const (
	benchServices   = 1000
	benchPodsPerSvc = 10
	benchFlips      = 200
	benchDefaultQPS = 1000
)

// BenchmarkConverge measures, on a real control plane, how long our controllers take to publish
// Endpoints and EndpointSlices for 1000 Services × 10 ready pods from empty, then the latency from
// one pod's readiness change to both APIs showing it (p50/p99 over 200 flips, 100 ms apart). The manager's client
// QPS is $BENCH_QPS (default 1000); kube-controller-manager v1.37.2 on this machine: 50.8 s at QPS
// 20, 17.4 s at QPS 1000, flip p50 ~20 ms. cache-sync-s is the part of converge-s before the
// manager's caches were in sync.
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

	workload := published.Workload{Services: benchServices, PodsPerService: benchPodsPerSvc, Flips: benchFlips}
	result, err := workload.Run(ctx, c, func() error {
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
	for name, value := range result.Metrics() {
		b.ReportMetric(value, name)
	}
	b.ReportMetric((<-cacheSynced).Seconds(), "cache-sync-s")
	b.ReportMetric(float64(qps), "client-qps")
}
