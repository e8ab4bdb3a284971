package clusterdns_test

import (
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/controllers/endpoints"
	"github.com/kube-clusterip/kube-clusterip/test/clusterdns"
	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// dualStackRange lets the API server give a RequireDualStack Service an IPv4 and an IPv6 ClusterIP.
const dualStackRange = "10.96.0.0/12,fd00:10:96::/108"

const nodeName = "node-a"

var (
	testEnv   *envtest.Environment
	k8sClient client.Client
	dnsServer *clusterdns.Server
	stopMgr   context.CancelFunc
	mgrDone   = make(chan error, 1)
)

func TestClusterDNS(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "real CoreDNS on our Services and EndpointSlices (envtest, loopback)")
}

// The suite runs our endpoints controllers (the EndpointSlices CoreDNS reads) and CoreDNS on
// 127.0.0.1, against one API server; the API server assigns ClusterIPs itself.
var _ = BeforeSuite(func(ctx SpecContext) {
	testenv.ControllerSuiteDefaults()
	testEnv = testenv.New()
	testEnv.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", dualStackRange)
	var cfg *rest.Config
	cfg, k8sClient = testenv.Start(testEnv, clientgoscheme.Scheme)

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  clientgoscheme.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(endpoints.SetupWithManager(mgr, endpoints.Options{})).To(Succeed())
	var mgrCtx context.Context
	mgrCtx, stopMgr = context.WithCancel(context.Background())
	go func() {
		defer GinkgoRecover()
		mgrDone <- mgr.Start(mgrCtx)
	}()
	Expect(k8sClient.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})).To(Succeed())

	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	_, err = controlplane.WriteAdminKubeconfig(testEnv, "coredns", path)
	Expect(err).NotTo(HaveOccurred())
	dnsServer, err = clusterdns.Start(ctx, clusterdns.Config{Kubeconfig: path, DNSAddress: "127.0.0.1:0", Log: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("CoreDNS pid %d on %s with Corefile:\n%s", dnsServer.Pid(), dnsServer.DNSAddress, dnsServer.Corefile)
})

var _ = AfterSuite(func() {
	dnsServer.Stop()
	if stopMgr != nil {
		stopMgr()
		Eventually(mgrDone).Should(Receive(Not(HaveOccurred())))
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})
