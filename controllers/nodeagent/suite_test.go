package nodeagent_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/controllers/nodeagent"
	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var (
	env       *envtest.Environment
	k8sClient client.Client
	nft       *failingFake
	agent     *nodeagent.Agent
	cancel    context.CancelFunc
	done      = make(chan struct{})
)

func TestNodeAgent(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Node agent suite")
}

// failingFake is a knftables Fake whose transactions can be made to fail, as a broken nft would.
type failingFake struct {
	*knftables.Fake
	failing atomic.Bool
}

func (f *failingFake) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.failing.Load() {
		return errors.New("nft: transaction rejected (injected)")
	}
	return f.Fake.Run(ctx, tx)
}

type noConntrack struct{}

func (noConntrack) DeleteUDPFlows([]datapath.StaleUDPFlow) (int, error) { return 0, nil }

var _ = BeforeSuite(func() {
	testenv.SuiteDefaults()
	env = testenv.New()
	var cfg *rest.Config
	cfg, k8sClient = testenv.Start(env, scheme.Scheme)

	nft = &failingFake{Fake: knftables.NewFake(knftables.IPv4Family, datapath.DefaultTableName)}
	proxier, err := datapath.New(datapath.Config{
		NodeName:      "node-a",
		IPFamilies:    []corev1.IPFamily{corev1.IPv4Protocol},
		NewInterface:  func(knftables.Family, string) (knftables.Interface, error) { return nft, nil },
		CanaryPresent: func(context.Context, knftables.Family, string) (bool, error) { return true, nil },
		Conntrack:     noConntrack{},
		OnSync:        nodeagent.RecordSync,
	})
	Expect(err).NotTo(HaveOccurred())

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Node{}: nodeagent.OwnNodeCache("node-a")}}})
	Expect(err).NotTo(HaveOccurred())
	agent = &nodeagent.Agent{Client: mgr.GetClient(), Proxier: proxier,
		Options: nodeagent.Options{MinSyncPeriod: 50 * time.Millisecond, MaxConsecutiveFailures: 2}, NodeName: "node-a"}
	Expect(agent.SetupWithManager(mgr)).To(Succeed())
	var ctx context.Context
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
		<-done
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
