package ipam

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/cachesync"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// suiteOptions has a short grace period, so that reservations of failed creates expire in a test.
var suiteOptions = Options{ReservationGracePeriod: 2 * time.Second}

var (
	testEnv   *envtest.Environment
	restCfg   *rest.Config
	k8sClient client.Client // direct: reads never come from the manager's cache
	scheme    = runtime.NewScheme()
	running   *runningManager
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
}

func TestEnvtest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ClusterIP assignment (envtest)")
}

var _ = BeforeSuite(func() {
	testenv.ControllerSuiteDefaults()

	testEnv = testenv.New()
	testenv.WithWebhooks(testEnv)
	restCfg, k8sClient = testenv.Start(testEnv, scheme)
	running = startManager(suiteOptions)
})

var _ = AfterSuite(func() {
	if running != nil {
		running.Stop()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// runningManager is a started manager with our setup; Stop waits for mgr.Start to return.
type runningManager struct {
	*testenv.Manager
	registry *Registry
}

// startManager starts a manager with ClusterIP assignment and waits until its webhooks answer.
func startManager(opts Options) *runningManager {
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		Controller:    config.Controller{SkipNameValidation: ptr.To(true)}, // one manager after another
		WebhookServer: testenv.WebhookServer(testEnv),
		NewCache:      cachesync.New, // as deployed
	})
	Expect(err).NotTo(HaveOccurred())
	registry, err := setup(mgr, opts)
	Expect(err).NotTo(HaveOccurred())
	m := &runningManager{Manager: testenv.StartManager(mgr), registry: registry}
	Eventually(registry.Ready()).Should(BeClosed())
	testenv.WaitForWebhookServer(testEnv)
	return m
}

// restartManager stops the running manager, runs between (e.g. changes made while it is down),
// and starts a new one on the same control plane.
func restartManager(between func()) {
	running.Stop()
	if between != nil {
		between()
	}
	running = startManager(suiteOptions)
}

var nameCounter atomic.Int64

// uniqueName returns a name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, GinkgoParallelProcess(), nameCounter.Add(1))
}

// newNamespace creates a namespace of its own for a test, with labels.
func newNamespace(labels map[string]string) string {
	return testenv.NewNamespace(context.Background(), k8sClient, "ipam", labels)
}

// createPool creates a pool for the namespaces labelled selector and waits until it hands out
// addresses.
func createPool(cidrs []string, selector map[string]string, reserved ...string) *ipamv1alpha1.ClusterIPPool {
	pool := &ipamv1alpha1.ClusterIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("pool")},
		Spec:       ipamv1alpha1.ClusterIPPoolSpec{CIDRs: cidrs, Reserved: reserved},
	}
	if selector != nil {
		pool.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: selector}
	}
	Expect(k8sClient.Create(context.Background(), pool)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, pool))).To(Succeed())
	})
	Eventually(func(g Gomega) {
		got := &ipamv1alpha1.ClusterIPPool{}
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pool), got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.Conditions).To(ContainElement(And(
			HaveField("Type", ipamv1alpha1.ConditionReady), HaveField("Status", metav1.ConditionTrue))))
	}).Should(Succeed())
	return pool
}

// newService returns a ClusterIP Service with one port; mutate adjusts it before creation.
func newService(ns, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	return kit.MakeService(name, ns).Port(corev1.ServicePort{Name: "http", Port: 80}).Mutate(mutate...).Obj()
}

func withClusterIP(ip string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.ClusterIP = ip }
}
