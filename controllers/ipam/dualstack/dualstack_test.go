// Package dualstack_test runs ClusterIP assignment against a dual-stack kube-apiserver
// (--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/108), a control plane of its own.
package dualstack_test

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/ipam"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

const dualStackRange = "10.96.0.0/12,fd00:10:96::/108"

var (
	testEnv   *envtest.Environment
	k8sClient client.Client
	running   *testenv.Manager
	scheme    = runtime.NewScheme()
)

func TestDualStack(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "ClusterIP assignment on a dual-stack API server (envtest)")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	testenv.ControllerSuiteDefaults()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))

	testEnv = testenv.New()
	testEnv.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", dualStackRange)
	testenv.WithWebhooks(testEnv)
	var cfg *rest.Config
	cfg, k8sClient = testenv.Start(testEnv, scheme)
	// The API server publishes its range as the ServiceCIDR "kubernetes"; the default pool copies it.
	Eventually(func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Name: "kubernetes"}, &networkingv1.ServiceCIDR{})
	}).Should(Succeed())

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		WebhookServer: testenv.WebhookServer(testEnv),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(ipam.SetupWithManager(mgr, ipam.Options{})).To(Succeed())
	running = testenv.StartManager(mgr)
	testenv.WaitForWebhookServer(testEnv)
	waitReady(ctx, ipamv1alpha1.DefaultPoolName)
})

var _ = AfterSuite(func() {
	running.Stop()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// waitReady waits until our reconciler has written the pool's status, which it does only once
// the pools mirror the cluster.
func waitReady(ctx context.Context, name string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		pool := &ipamv1alpha1.ClusterIPPool{}
		g.Expect(k8sClient.Get(ctx, types.NamespacedName{Name: name}, pool)).To(Succeed())
		g.Expect(pool.Status.ObservedGeneration).To(Equal(pool.Generation))
		g.Expect(pool.Status.Conditions).To(ContainElement(And(
			HaveField("Type", ipamv1alpha1.ConditionReady), HaveField("Status", metav1.ConditionTrue))))
	}).Should(Succeed())
}

func newNamespace(ctx context.Context, labels map[string]string) string {
	return testenv.NewNamespace(ctx, k8sClient, "dual", labels)
}

func newService(ns, name string, policy corev1.IPFamilyPolicy, families ...corev1.IPFamily) *corev1.Service {
	return kit.MakeService(name, ns).Port(corev1.ServicePort{Name: "http", Port: 80}).IPFamilyPolicy(policy).Families(families...).Obj()
}

func within(cidr string) func(string) bool {
	prefix := netip.MustParsePrefix(cidr)
	return func(ip string) bool { return prefix.Contains(netip.MustParseAddr(ip)) }
}

var _ = Describe("ClusterIP assignment on a dual-stack cluster", func() {
	const v4Pool, v6Pool = "10.96.80.0/24", "fd00:10:96::1:0/112"
	var ns string

	BeforeEach(func(ctx SpecContext) {
		label := "dual-" + strconv.Itoa(GinkgoParallelProcess()) + "-" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
		pool := &ipamv1alpha1.ClusterIPPool{
			ObjectMeta: metav1.ObjectMeta{Name: label},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{v4Pool, v6Pool},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": label}}},
		}
		Expect(k8sClient.Create(ctx, pool)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, pool)).To(Succeed()) })
		waitReady(ctx, pool.Name)
		ns = newNamespace(ctx, map[string]string{"team": label})
	})

	It("creates the default pool from the cluster's ServiceCIDR, with both families", func(ctx SpecContext) {
		pool := &ipamv1alpha1.ClusterIPPool{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ipamv1alpha1.DefaultPoolName}, pool)).To(Succeed())
		Expect(pool.Spec.CIDRs).To(Equal([]string{"10.96.0.0/12", "fd00:10:96::/108"}))
	})

	It("gives a RequireDualStack Service one IPv4 and one IPv6 ClusterIP from the pool", func(ctx SpecContext) {
		svc := newService(ns, "dual", corev1.IPFamilyPolicyRequireDualStack)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(HaveLen(2))
		Expect(svc.Spec.ClusterIPs[0]).To(Satisfy(within(v4Pool)))
		Expect(svc.Spec.ClusterIPs[1]).To(Satisfy(within(v6Pool)))
		Expect(svc.Spec.IPFamilies).To(Equal([]corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}))
	})

	It("puts the family a PreferDualStack Service lists first first", func(ctx SpecContext) {
		svc := newService(ns, "v6-first", corev1.IPFamilyPolicyPreferDualStack, corev1.IPv6Protocol)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(HaveLen(2))
		Expect(svc.Spec.ClusterIPs[0]).To(Satisfy(within(v6Pool)))
		Expect(svc.Spec.ClusterIPs[1]).To(Satisfy(within(v4Pool)))
	})

	It("gives a single-stack IPv6 Service an address of the pool's IPv6 CIDR", func(ctx SpecContext) {
		svc := newService(ns, "v6-only", corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(HaveLen(1))
		Expect(svc.Spec.ClusterIPs[0]).To(Satisfy(within(v6Pool)))
	})

	It("adds the missing family from the pool when a single-stack Service becomes dual-stack", func(ctx SpecContext) {
		svc := newService(ns, "upgraded", corev1.IPFamilyPolicySingleStack)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		first := svc.Spec.ClusterIPs[0]
		Expect(first).To(Satisfy(within(v4Pool)))
		svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(HaveLen(2))
		Expect(svc.Spec.ClusterIPs[0]).To(Equal(first))
		Expect(svc.Spec.ClusterIPs[1]).To(Satisfy(within(v6Pool)))
	})

	It("gives an ExternalName Service that turns into a ClusterIP Service an address of the pool", func(ctx SpecContext) {
		svc := kit.MakeService("was-external", ns).ExternalName("example.com").Obj()
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIP).To(BeEmpty())
		svc.Spec.Type, svc.Spec.ExternalName = corev1.ServiceTypeClusterIP, ""
		svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}}
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIP).To(Satisfy(within(v4Pool)))
	})

	It("leaves headless Services alone", func(ctx SpecContext) {
		svc := newService(ns, "headless", corev1.IPFamilyPolicyRequireDualStack)
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(Equal([]string{corev1.ClusterIPNone}))
	})
})
