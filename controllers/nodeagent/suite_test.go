package nodeagent_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/controllers/cachesync"
	"github.com/kube-clusterip/kube-clusterip/controllers/nodeagent"
	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// healthTimeout is the agent's proxy health timeout; healthClock, its clock, moves only
// when a spec steps it.
const healthTimeout = time.Minute

var (
	healthClock *clocktesting.FakeClock
	env         *envtest.Environment
	k8sClient   client.Client
	fakeNode    *datapath.Fake  // the Proxier, on knftables Fakes
	nft         *knftables.Fake // its IPv4 table
	agent       *nodeagent.Agent
	running     *testenv.Manager
)

func TestNodeAgent(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Node agent suite")
}

var _ = BeforeSuite(func() {
	testenv.SuiteDefaults()
	env = testenv.New()
	var cfg *rest.Config
	cfg, k8sClient = testenv.Start(env, scheme.Scheme)

	var err error
	fakeNode, err = datapath.NewFake(datapath.Config{
		NodeName:   "node-a",
		IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		OnSync:     nodeagent.RecordSync,
	})
	Expect(err).NotTo(HaveOccurred())
	nft = fakeNode.Table(corev1.IPv4Protocol)

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		NewCache: cachesync.New, // as deployed
		Cache:    cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Node{}: nodeagent.OwnNodeCache("node-a")}}})
	Expect(err).NotTo(HaveOccurred())
	healthClock = clocktesting.NewFakeClock(time.Now())
	health := nodeagent.NewProxyHealth(healthClock, healthTimeout)
	agent = &nodeagent.Agent{Client: mgr.GetClient(), Proxier: fakeNode.Proxier,
		Options: nodeagent.Options{MinSyncPeriod: 50 * time.Millisecond, MaxConsecutiveFailures: 2}, NodeName: "node-a",
		Health: health, ServiceHealth: &nodeagent.ServiceHealthServers{Addresses: []string{"127.0.0.1"}, ProxyHealthy: health.Healthy},
		FallbackServiceCIDRs: []string{"10.96.0.0/12"}, Recorder: mgr.GetEventRecorder("kube-clusterip-datapath")}
	Expect(agent.SetupWithManager(mgr)).To(Succeed())
	running = testenv.StartManager(mgr)
})

var _ = AfterSuite(func() {
	running.Stop()
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
