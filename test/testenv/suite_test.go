package testenv_test

import (
	"context"
	"net/netip"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var (
	env       *envtest.Environment
	k8sClient client.Client
)

func TestControlPlane(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Control plane suite")
}

var _ = BeforeSuite(func() {
	testenv.SuiteDefaults()
	env = testenv.New()
	_, k8sClient = testenv.Start(env, scheme.Scheme)
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

var _ = Describe("the envtest control plane", func() {
	It("runs the offline-built kube-apiserver at the pinned version", func() {
		dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
		Expect(err).NotTo(HaveOccurred())
		version, err := dc.ServerVersion()
		Expect(err).NotTo(HaveOccurred())
		Expect(version.GitVersion).To(HavePrefix("v1.37."))
	})

	It("gives a Service a ClusterIP inside 10.96.0.0/12", func(ctx context.Context) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "backend-service", Namespace: "default"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "backend"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		Expect(err).NotTo(HaveOccurred(), "spec.clusterIP %q", svc.Spec.ClusterIP)
		Expect(netip.MustParsePrefix(testenv.ServiceClusterIPRange).Contains(ip)).To(BeTrue(),
			"ClusterIP %s outside %s", ip, testenv.ServiceClusterIPRange)
	})
})
