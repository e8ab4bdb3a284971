package endpoints

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/controllers/cachesync"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// suiteBatchPeriod is long enough that a test's burst of pod changes falls in one batch.
const suiteBatchPeriod = time.Second

var (
	testEnv   *envtest.Environment
	k8sClient client.Client // direct: reads never come from the manager's cache
	writes    *writeCounter
	running   *testenv.Manager
	suiteCfg  *rest.Config // the control plane's, for a manager started anew
)

func TestEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "endpoints controllers (envtest)")
}

var _ = BeforeSuite(func() {
	testenv.ControllerSuiteDefaults()

	testEnv = testenv.New()
	var cfg *rest.Config
	cfg, k8sClient = testenv.Start(testEnv, clientgoscheme.Scheme)

	suiteCfg = cfg
	writes = newWriteCounter()
	running = startManager(cfg, writes, Options{BatchPeriod: suiteBatchPeriod})

	for node, zone := range map[string]string{"node-a": "zone-a", "node-b": "zone-b"} {
		Expect(k8sClient.Create(context.Background(), kit.MakeNode(node).Zone(zone).Obj())).To(Succeed())
	}
})

var _ = AfterSuite(func() {
	running.Stop()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// startManager runs a manager with our controllers whose clients count writes.
func startManager(cfg *rest.Config, counter *writeCounter, opts Options) *testenv.Manager {
	countingClient := func(config *rest.Config, options client.Options) (client.Client, error) {
		c, err := client.NewWithWatch(config, options)
		if err != nil {
			return nil, err
		}
		return interceptor.NewClient(c, counter.funcs()), nil
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:     clientgoscheme.Scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Node{}: {Transform: NodeCacheTransform},
		}},
		NewClient: countingClient, // the reconcilers' reads
		NewCache:  cachesync.New,  // as deployed
	})
	Expect(err).NotTo(HaveOccurred())
	opts.NewWriterClient = countingClient // every writer's writes
	Expect(SetupWithManager(mgr, opts)).To(Succeed())
	return testenv.StartManager(mgr)
}

// writeCounter counts the API writes our controllers make, by namespace and kind, and the Service
// reads (one per reconcile of a Service).
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]*atomic.Int64
}

func newWriteCounter() *writeCounter { return &writeCounter{counts: map[string]*atomic.Int64{}} }

func (w *writeCounter) counter(key string) *atomic.Int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.counts[key] == nil {
		w.counts[key] = &atomic.Int64{}
	}
	return w.counts[key]
}

func kindOf(obj runtime.Object) string {
	switch obj.(type) {
	case *corev1.Endpoints:
		return "Endpoints"
	case *discoveryv1.EndpointSlice:
		return "EndpointSlice"
	case *corev1.Service:
		return "Service"
	}
	return fmt.Sprintf("%T", obj)
}

// Writes returns the number of writes of kind ("Endpoints", "EndpointSlice", or "" for both) in ns.
func (w *writeCounter) Writes(ns, kind string) int64 {
	if kind == "" {
		return w.Writes(ns, "Endpoints") + w.Writes(ns, "EndpointSlice")
	}
	return w.counter(ns + "/write/" + kind).Load()
}

// ServiceReads returns how often a Service in ns was read, i.e. reconciled.
func (w *writeCounter) ServiceReads(ns string) int64 { return w.counter(ns + "/read/Service").Load() }

func (w *writeCounter) funcs() interceptor.Funcs {
	count := func(obj client.Object) { w.counter(obj.GetNamespace() + "/write/" + kindOf(obj)).Add(1) }
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Service); ok {
				w.counter(key.Namespace + "/read/Service").Add(1)
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			count(obj)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			count(obj)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			count(obj)
			return c.Patch(ctx, obj, patch, opts...)
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			count(obj)
			return c.Delete(ctx, obj, opts...)
		},
	}
}
