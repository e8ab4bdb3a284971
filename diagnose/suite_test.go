package diagnose_test

import (
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// No controller runs in this suite: specs create pods, patch their status as kubelet would, and
// write Endpoints and EndpointSlices themselves, then run the command as a user would.
var (
	env        *envtest.Environment
	k8sClient  client.Client
	kubeconfig string // an admin kubeconfig file, as users pass with --kubeconfig
)

func TestDiagnoseCommand(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "diagnose command suite")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	testenv.SuiteDefaults()
	env = testenv.New()
	env.CRDDirectoryPaths = []string{testenv.CRDDirectory()}
	cfg, err := env.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: diagnose.Scheme()})
	Expect(err).NotTo(HaveOccurred())

	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	_, err = controlplane.WriteAdminKubeconfig(env, "diagnose-admin", kubeconfig)
	Expect(err).NotTo(HaveOccurred())

	pool := &ipamv1alpha1.ClusterIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: ipamv1alpha1.DefaultPoolName},
		Spec:       ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{testenv.ServiceClusterIPRange}},
	}
	Expect(k8sClient.Create(ctx, pool)).To(Succeed())
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
