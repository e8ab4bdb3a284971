package ipam

import (
	"context"
	"fmt"
	"net/netip"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// holdFinalizer keeps a deleted ServiceCIDR terminating, as kube-controller-manager's finalizer
// does while addresses of it are in use (envtest runs no kube-controller-manager).
const holdFinalizer = "test.clusterip.dev/hold"

var _ = Describe("the pool default and the cluster's ServiceCIDRs", Serial, func() {
	It("hands out addresses of a ServiceCIDR added at runtime, without a restart, and none new of one being deleted", func(ctx SpecContext) {
		extra := &networkingv1.ServiceCIDR{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("extra"), Finalizers: []string{holdFinalizer}},
			Spec:       networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.200.0.0/28"}},
		}
		Expect(k8sClient.Create(ctx, extra)).To(Succeed())
		DeferCleanup(func(ctx context.Context) {
			Expect(client.IgnoreNotFound(k8sClient.Patch(ctx, extra, client.RawPatch(types.JSONPatchType,
				[]byte(`[{"op":"remove","path":"/metadata/finalizers"}]`))))).To(Succeed())
			Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, extra))).To(Succeed())
		})
		ns := newNamespace(nil)
		first := newService(ns, "first", withClusterIP("10.200.0.5"))
		Eventually(func() error { return k8sClient.Create(ctx, first) }).Should(Succeed())
		Eventually(func(g Gomega) {
			pool := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ipamv1alpha1.DefaultPoolName}, pool)).To(Succeed())
			g.Expect(pool.Status.Families).To(ContainElement(And(HaveField("CIDR", "10.200.0.0/28"), HaveField("Allocated", int64(1)))))
		}).Should(Succeed())

		By("the ServiceCIDR is deleted; a finalizer keeps it terminating")
		Expect(k8sClient.Delete(ctx, extra)).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Create(ctx, newService(ns, "second", withClusterIP("10.200.0.6")), client.DryRunAll)
			g.Expect(err).To(MatchError(ContainSubstring("which is being deleted or not Ready: the API server assigns no new address from it")))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			c := defaultPoolCondition(ctx, g, ipamv1alpha1.ConditionOutsideServiceCIDRs)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring(extra.Name))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			got := &corev1.Service{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(first), got)).To(Succeed())
			g.Expect(holderOf(netip.MustParseAddr("10.200.0.5"))).To(Equal(ns+"/first"), "the Service keeps its address and counts in the pool")
			g.Expect(defaultPoolCondition(ctx, g, ipamv1alpha1.ConditionConflicting).Status).To(Equal(metav1.ConditionFalse))
		}).Should(Succeed())
		Expect(k8sClient.Delete(ctx, first)).To(Succeed())
	})

	It("gives a pool outside every ServiceCIDR a condition and an Event, and refuses its namespaces' Services with the reason", func(ctx SpecContext) {
		labels := map[string]string{"team": uniqueName("outside")}
		pool := &ipamv1alpha1.ClusterIPPool{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("outside")},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.250.0.0/29"},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: labels}},
		}
		Expect(k8sClient.Create(ctx, pool)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, pool))).To(Succeed()) })
		Eventually(func(g Gomega) {
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			c := meta.FindStatusCondition(got.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("10.250.0.0/29 lies outside every ServiceCIDR of the cluster (10.96.0.0/12)"))
			g.Expect(meta.IsStatusConditionFalse(got.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			events := &eventsv1.EventList{}
			g.Expect(k8sClient.List(ctx, events)).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(
				HaveField("Regarding.Name", pool.Name), HaveField("Type", corev1.EventTypeWarning),
				HaveField("Reason", ReasonOutsideServiceCIDRs))))
		}).Should(Succeed())
		ns := newNamespace(labels)
		err := k8sClient.Create(ctx, newService(ns, "web"))
		Expect(err).To(MatchError(ContainSubstring("lies outside every ServiceCIDR")), "denied by us, not sent to the API server or another pool")
	})

	It("hands out the addresses of a pool spanning two adjacent ServiceCIDRs, each of which the API server accepts", func(ctx SpecContext) {
		for _, cidr := range []string{"10.251.0.0/28", "10.251.0.16/28"} {
			sc := &networkingv1.ServiceCIDR{
				ObjectMeta: metav1.ObjectMeta{Name: uniqueName("adjacent")},
				Spec:       networkingv1.ServiceCIDRSpec{CIDRs: []string{cidr}},
			}
			Expect(k8sClient.Create(ctx, sc)).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, sc))).To(Succeed()) })
		}
		labels := map[string]string{"team": uniqueName("spanning")}
		pool := createPool([]string{"10.251.0.0/27"}, labels)
		got := &ipamv1alpha1.ClusterIPPool{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
		Expect(got.Status.Families).To(HaveLen(2))
		Expect(meta.FindStatusCondition(got.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs)).To(
			HaveField("Message", ContainSubstring("10.251.0.0/27 lies in no single ServiceCIDR")))
		ns := newNamespace(labels)

		By("the broadcast address of the first ServiceCIDR, requested, is refused as kube-apiserver refuses it")
		err := k8sClient.Create(ctx, newService(ns, "boundary", withClusterIP("10.251.0.15")))
		Expect(err).To(MatchError(ContainSubstring("the provided network does not match the current range")))

		By("every other address is handed out, and the API server accepts each")
		assigned := map[string]bool{}
		for i := range 28 {
			svc := newService(ns, fmt.Sprintf("svc-%d", i))
			Expect(k8sClient.Create(ctx, svc)).To(Succeed())
			// Before the ServiceCIDRs go: no address is left outside every pool for later specs.
			DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, svc))).To(Succeed()) })
			Expect(netip.MustParsePrefix("10.251.0.0/27").Contains(netip.MustParseAddr(svc.Spec.ClusterIP))).To(BeTrue(), svc.Spec.ClusterIP)
			assigned[svc.Spec.ClusterIP] = true
		}
		Expect(assigned).To(HaveLen(28))
		Expect(assigned).NotTo(HaveKey("10.251.0.16"), "the network address of the second ServiceCIDR")
		Expect(k8sClient.Create(ctx, newService(ns, "one-too-many"))).To(MatchError(ContainSubstring("no free")))
	})
})
