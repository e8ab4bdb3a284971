// Package reliability holds the reliability suite of issue 12: the manager runs as a separate
// process (built once from main.go) against a real kube-apiserver and etcd, so that a scenario
// can SIGKILL it, restart it, or stop the API server under it, then check what users rely on:
// unique ClusterIPs, pool counts that match the Services, endpoints that match the pods.
package reliability

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var (
	testEnv   *envtest.Environment
	k8sClient client.Client // direct: every read goes to the API server
	scheme    = runtime.NewScheme()
	workDir   string // the binary, the kubeconfig and the API server's certificates
	manager   *managerProcess
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
}

func TestReliability(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Reliability (manager process, envtest control plane)")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	// Generous: the suite shares 2 cores with a control plane and the manager, and under
	// `make test` with other suites.
	testenv.ProcessSuiteDefaults()

	var err error
	workDir, err = os.MkdirTemp("", "kube-clusterip-reliability-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, workDir)
	binary := buildManager(ctx)

	testEnv = testenv.New()
	testenv.WithWebhooks(testEnv)
	testEnv.ControlPlaneStartTimeout = 2 * time.Minute
	// kube-apiserver stops listening at once on SIGTERM but, while the manager's watches are
	// open, may take a minute to exit; envtest sends SIGKILL after this.
	testEnv.ControlPlaneStopTimeout = apiServerStopTimeout
	// A certificate directory of our own survives APIServer.Stop (envtest removes and
	// regenerates a temporary one), so a restarted API server keeps its serving certificate,
	// its client CA and its port, and the manager's kubeconfig stays valid.
	apiServer := testEnv.ControlPlane.GetAPIServer()
	apiServer.CertDir = filepath.Join(workDir, "apiserver")
	Expect(os.Mkdir(apiServer.CertDir, 0o700)).To(Succeed())
	apiServer.StartTimeout = 2 * time.Minute

	_, k8sClient = testenv.Start(testEnv, scheme, func(cfg *rest.Config) {
		cfg.WarningHandler = rest.NoWarnings{} // we read Endpoints on purpose
		cfg.QPS, cfg.Burst = 500, 1000
	})

	kubeconfigPath := filepath.Join(workDir, "kubeconfig")
	_, err = controlplane.WriteAdminKubeconfig(testEnv, "kube-clusterip", kubeconfigPath)
	Expect(err).NotTo(HaveOccurred())

	wio := &testEnv.WebhookInstallOptions
	manager = newManagerProcess(binary, kubeconfigPath, wio.LocalServingCertDir, wio.LocalServingPort)
	manager.start()
	// Generous: building the manager alone took over 4 minutes on a 2-core machine busy with
	// other builds.
}, NodeTimeout(10*time.Minute))

var _ = AfterSuite(func() {
	if manager != nil {
		manager.kill()
	}
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// buildManager builds main.go once into workDir.
func buildManager(ctx context.Context) string {
	binary := filepath.Join(workDir, "kube-clusterip")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", binary, ".")
	cmd.Dir = testenv.RepoRoot()
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "go build of the manager")
	return binary
}
