package reliability

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// bystander is a Service with two ready pods that every bad-input spec checks afterwards: it keeps
// its ClusterIP and its endpoints, whatever the spec fed the manager.
var bystander struct {
	once sync.Once
	ns   string
	ip   string
	pods []*corev1.Pod
}

func ensureBystander(ctx context.Context) {
	bystander.once.Do(func() {
		bystander.ns = testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		labels := map[string]string{"app": "bystander"}
		svc := newService(bystander.ns, "bystander", labels)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		bystander.ip = svc.Spec.ClusterIP
		for i := range 2 {
			bystander.pods = append(bystander.pods, runPod(ctx, bystander.ns, fmt.Sprintf("bystander-%d", i), labels, true))
		}
	})
}

func expectBystanderServed(g Gomega, ctx context.Context) {
	svc := &corev1.Service{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: bystander.ns, Name: "bystander"}, svc)).To(Succeed())
	g.Expect(svc.Spec.ClusterIP).To(Equal(bystander.ip), "the bystander Service's ClusterIP")
	expectPublished(g, ctx, bystander.ns, "bystander", podIPs(bystander.pods...), nil)
}

var _ = Describe("bad input is answered by a clear error or Event, and nothing else breaks", func() {
	var pid int
	BeforeEach(func(ctx SpecContext) {
		ensureNode(ctx)
		ensureBystander(ctx)
		Eventually(func(g Gomega) { expectBystanderServed(g, ctx) }).Should(Succeed())
		pid = manager.pid()
	})
	AfterEach(func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			expectManagerHealthy(g, pid)
			expectBystanderServed(g, ctx)
			expectClusterIPsConsistent(g, ctx)
		}).Should(Succeed())
	})

	It("a Service with 100 ports gets a ClusterIP and publishes all 100 ports", func(ctx SpecContext) {
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		labels := map[string]string{"app": "many-ports"}
		svc := newService(ns, "many-ports", labels, func(s *corev1.Service) {
			s.Spec.Ports = nil
			for i := range 100 {
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i),
					Port: int32(1000 + i), TargetPort: intstr.FromInt32(int32(2000 + i)), Protocol: corev1.ProtocolTCP})
			}
		})
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		expectIPIn(Default, svc, "10.96.0.0/12")
		pod := runPod(ctx, ns, "many-ports-0", labels, true)
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, svc.Name, podIPs(pod), nil)
			ep := &corev1.Endpoints{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), ep)).To(Succeed())
			g.Expect(ep.Subsets).To(HaveLen(1))
			g.Expect(ep.Subsets[0].Ports).To(HaveLen(100))
			for _, s := range ourSlices(g, ctx, ns, svc.Name) {
				g.Expect(s.Ports).To(HaveLen(100))
			}
		}).Should(Succeed())
	})

	It("port names at the 63-character limit are published; one more character is refused by the API server", func(ctx SpecContext) {
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		labels := map[string]string{"app": "long-names"}
		longName := strings.Repeat("p", 63)
		containerPort := strings.Repeat("c", 15) // IANA service names stop at 15
		svc := newService(ns, "long-names", labels, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{
				{Name: longName, Port: 80, TargetPort: intstr.FromString(containerPort), Protocol: corev1.ProtocolTCP},
				{Name: strings.Repeat("q", 63), Port: 81, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP},
			}
		})
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		pod := runPod(ctx, ns, "long-names-0", labels, true,
			corev1.ContainerPort{Name: containerPort, ContainerPort: 8080, Protocol: corev1.ProtocolTCP})
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, svc.Name, podIPs(pod), nil)
			ep := &corev1.Endpoints{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), ep)).To(Succeed())
			g.Expect(ep.Subsets[0].Ports).To(ConsistOf(
				corev1.EndpointPort{Name: longName, Port: 8080, Protocol: corev1.ProtocolTCP},
				corev1.EndpointPort{Name: strings.Repeat("q", 63), Port: 9090, Protocol: corev1.ProtocolTCP}))
			for _, s := range ourSlices(g, ctx, ns, svc.Name) {
				g.Expect(s.Ports).To(ContainElement(HaveField("Name", ptr.To(longName))))
			}
		}).Should(Succeed())

		tooLong := newService(ns, "too-long", labels, func(s *corev1.Service) { s.Spec.Ports[0].Name = strings.Repeat("p", 64) })
		err := k8sClient.Create(ctx, tooLong)
		Expect(err).To(MatchError(ContainSubstring("must be no more than 63 characters")))
	})

	It("a selector with 40 keys at the length limits selects exactly the pods with every label", func(ctx SpecContext) {
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		selector := map[string]string{}
		for i := range 40 {
			key := fmt.Sprintf("k%02d.example.com/%s", i, strings.Repeat("k", 59))
			selector[key] = strings.Repeat(strconv.Itoa(i%10), 63)
		}
		svc := newService(ns, "many-keys", selector)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		all := runPod(ctx, ns, "all-labels", selector, true)
		partial := map[string]string{}
		for k, v := range selector {
			partial[k] = v
		}
		for k := range partial {
			delete(partial, k) // one key short
			break
		}
		runPod(ctx, ns, "one-label-short", partial, true)
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, svc.Name, podIPs(all), nil)
		}).Should(Succeed())
	})

	It("a pool with an invalid CIDR is refused by CEL with a clear message", func(ctx SpecContext) {
		for cidr, message := range map[string]string{
			"10.300.0.0/16":   "must be a CIDR such as 10.96.0.0/12",
			"not-a-cidr":      "must be a CIDR such as 10.96.0.0/12",
			"10.110.20.5/24":  "must be the network address of the CIDR (host bits zero)",
			"10.110.20.0/31":  "must hold assignable addresses",
			"fd00:10:96::/48": "must hold assignable addresses",
		} {
			pool := &ipamv1alpha1.ClusterIPPool{
				ObjectMeta: metav1.ObjectMeta{Name: uniqueName("invalid")},
				Spec:       ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{cidr}},
			}
			Expect(k8sClient.Create(ctx, pool)).To(MatchError(ContainSubstring(message)), "pool with CIDR %s", cidr)
		}
	})

	It("a pool with another pool's CIDR is marked not Ready and Conflicting; Services keep their IPs", func(ctx SpecContext) {
		const cidr = "10.110.10.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "same-cidr"}
		first := createNamedPool(ctx, "reliability-same-cidr-a", cidr, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		svc := newService(ns, "in-first-pool", nil)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		expectIPIn(Default, svc, cidr)

		second := &ipamv1alpha1.ClusterIPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "reliability-same-cidr-b"},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{cidr},
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"other": "tenant"}}},
		}
		Expect(k8sClient.Create(ctx, second)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, second))).To(Succeed()) })
		Eventually(func(g Gomega) {
			ready := poolCondition(g, ctx, second.Name, ipamv1alpha1.ConditionReady)
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ready.Message).To(ContainSubstring("is also pool " + first.Name))
			conflicting := poolCondition(g, ctx, second.Name, ipamv1alpha1.ConditionConflicting)
			g.Expect(conflicting.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(conflicting.Reason).To(Equal("OverlappingCIDR"))
			g.Expect(poolCondition(g, ctx, first.Name, ipamv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())

		By("the first pool keeps serving: its Service keeps its IP, a new one gets the next")
		kept := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), kept)).To(Succeed())
		Expect(kept.Spec.ClusterIP).To(Equal(svc.Spec.ClusterIP))
		next := newService(ns, "after-conflict", nil)
		Expect(k8sClient.Create(ctx, next)).To(Succeed())
		expectIPIn(Default, next, cidr)
	})

	It("a pool shrunk below its allocated IPs keeps its Services' IPs and counts only those inside", func(ctx SpecContext) {
		labels := map[string]string{"reliability.clusterip.dev/scenario": "shrink"}
		pool := createNamedPool(ctx, uniqueName("reliability-shrink"), "10.110.11.0/24", labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		ips := map[string]string{}
		for i := range 6 {
			svc := newService(ns, fmt.Sprintf("svc-%d", i), nil)
			Expect(k8sClient.Create(ctx, svc)).To(Succeed())
			expectIPIn(Default, svc, "10.110.11.0/24")
			ips[svc.Name] = svc.Spec.ClusterIP
		}

		By("spec.cidrs shrinks to a /29 that cannot hold them all")
		Eventually(func(g Gomega) {
			current := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), current)).To(Succeed())
			current.Spec.CIDRs = []string{"10.110.11.0/29"}
			g.Expect(k8sClient.Update(ctx, current)).To(Succeed())
		}).Should(Succeed())
		inside := int64(0)
		for _, ip := range ips {
			if netip.MustParsePrefix("10.110.11.0/29").Contains(netip.MustParseAddr(ip)) {
				inside++
			}
		}
		Eventually(func(g Gomega) {
			g.Expect(poolCondition(g, ctx, pool.Name, ipamv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
			current := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), current)).To(Succeed())
			g.Expect(current.Status.Families).To(ConsistOf(And(HaveField("CIDR", "10.110.11.0/29"), HaveField("Allocated", inside))))
			for name, ip := range ips {
				svc := &corev1.Service{}
				g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, svc)).To(Succeed())
				g.Expect(svc.Spec.ClusterIP).To(Equal(ip), "Service %s kept its IP", name)
			}
		}).Should(Succeed())
		current := &ipamv1alpha1.ClusterIPPool{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), current)).To(Succeed())
		AddReportEntry("conditions of a shrunk pool", fmt.Sprintf("%+v", current.Status.Conditions))
	})

	It("Endpoints with invalid addresses are refused by the API server; duplicate addresses are mirrored once", func(ctx SpecContext) {
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		svc := newService(ns, "external-db", nil)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		endpointsWith := func(ready ...string) *corev1.Endpoints {
			ep := &corev1.Endpoints{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc.Name},
				Subsets: []corev1.EndpointSubset{{
					Ports: []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
				}},
			}
			for _, ip := range ready {
				ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: ip})
			}
			return ep
		}

		By("invalid addresses never reach the mirroring: the API server names them")
		for ip, message := range map[string]string{
			"010.001.002.004": "must not have leading 0s",
			"not-an-ip":       "must be a valid IP address",
			"127.0.0.1":       "may not be in the loopback range",
		} {
			Expect(k8sClient.Create(ctx, endpointsWith("10.1.2.3", ip))).To(MatchError(ContainSubstring(message)), "address %s", ip)
		}

		By("duplicates, within and across ready and not-ready addresses")
		ep := endpointsWith("10.1.2.3", "10.1.2.3", "10.1.2.6")
		ep.Subsets[0].NotReadyAddresses = []corev1.EndpointAddress{{IP: "10.1.2.5"}, {IP: "10.1.2.5"}}
		Expect(k8sClient.Create(ctx, ep)).To(Succeed())
		Eventually(func(g Gomega) {
			var list discoveryv1.EndpointSliceList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{
				discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: endpointrules.MirroringControllerName,
			})).To(Succeed())
			g.Expect(list.Items).To(HaveLen(1))
			var ready, notReady []string
			for _, e := range list.Items[0].Endpoints {
				if ptr.Deref(e.Conditions.Ready, true) {
					ready = append(ready, e.Addresses...)
				} else {
					notReady = append(notReady, e.Addresses...)
				}
			}
			g.Expect(sorted(ready)).To(Equal([]string{"10.1.2.3", "10.1.2.6"}))
			g.Expect(notReady).To(Equal([]string{"10.1.2.5"}))
		}).Should(Succeed())
	})

	It("an EndpointSlice of another controller for our Service is neither deleted nor adopted", func(ctx SpecContext) {
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		labels := map[string]string{"app": "shared"}
		svc := newService(ns, "shared", labels)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		foreign := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-by-someone-else", Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "someone-else.example.com"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.9.9.9"}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		pod := runPod(ctx, ns, "shared-0", labels, true)
		Eventually(func(g Gomega) { expectPublished(g, ctx, ns, svc.Name, podIPs(pod), nil) }).Should(Succeed())
		second := runPod(ctx, ns, "shared-1", labels, true)
		Eventually(func(g Gomega) { expectPublished(g, ctx, ns, svc.Name, podIPs(pod, second), nil) }).Should(Succeed())
		Consistently(func(g Gomega) {
			got := &discoveryv1.EndpointSlice{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), got)).To(Succeed())
			g.Expect(got.ResourceVersion).To(Equal(foreign.ResourceVersion), "the foreign slice was written")
			g.Expect(got.OwnerReferences).To(BeEmpty())
		}).Should(Succeed())
	})

	It("thousands of Services in one namespace each get a distinct IP and the manager stays healthy", func(ctx SpecContext) {
		n := manyServices()
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		start := time.Now()
		var created atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for w := range 32 {
			wg.Go(func() {
				for i := w; i < n; i += 32 {
					if err := k8sClient.Create(ctx, newService(ns, fmt.Sprintf("svc-%05d", i), nil)); err != nil {
						errs <- err
						return
					}
					created.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		Expect(errs).NotTo(Receive(), "creating %d Services", n)
		createdIn := time.Since(start)
		Eventually(func(g Gomega) {
			g.Expect(servicesIn(g, ctx, ns)).To(HaveLen(n))
			expectClusterIPsConsistent(g, ctx)
		}).WithTimeout(5 * time.Minute).Should(Succeed())
		AddReportEntry(fmt.Sprintf("%d Services in one namespace", n), fmt.Sprintf("created in %s, pools consistent after %s",
			createdIn.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
	})
})

// manyServices is how many Services the one-namespace spec creates: RELIABILITY_SERVICES, or 2000.
func manyServices() int {
	if n, err := strconv.Atoi(os.Getenv("RELIABILITY_SERVICES")); err == nil && n > 0 {
		return n
	}
	return 2000
}

// createNamedPool is createPool with a name of the caller's choice.
func createNamedPool(ctx context.Context, name, cidr string, selector map[string]string) *ipamv1alpha1.ClusterIPPool {
	pool := &ipamv1alpha1.ClusterIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{cidr},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: selector}},
	}
	return createAndWaitPool(ctx, pool)
}
