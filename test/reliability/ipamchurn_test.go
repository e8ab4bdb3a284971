package reliability

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Churn shape of issue 20: churnPairs Services each created and deleted at once, by
// churnClients clients.
const (
	churnPairs   = 200
	churnClients = 8
)

var _ = Describe("ClusterIP assignment under churn", func() {
	It("refuses no create when 200 Services are created and deleted at once by 8 clients right after each of two kube-apiserver restarts", func(ctx SpecContext) {
		const cidr = "10.110.13.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "restart-churn"}
		pool := createPool(ctx, cidr, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		apiServer := testEnv.ControlPlane.GetAPIServer()
		for restart := range 2 {
			By(fmt.Sprintf("kube-apiserver restart %d, then at once %d create/delete pairs and another %d", restart+1, churnPairs, churnPairs))
			stopAPIServer(apiServer)
			Expect(apiServer.Start()).To(Succeed(), "leave a control plane for the other specs")
			for round := range 2 {
				refused := churn(ctx, ns, fmt.Sprintf("r%d-%d", restart, round), cidr)
				Expect(refused).To(BeEmpty(), "creates refused in round %d after restart %d", round+1, restart+1)
			}
		}
		expectPoolCountsItsHolders(ctx, pool, cidr, ns)
	})

	It("refuses no create in a half-full pool of 254 addresses holding 130 Services, over 5 rounds of 200 create/delete pairs by 8 clients", func(ctx SpecContext) {
		const cidr = "10.110.14.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "half-full-churn"}
		pool := createPool(ctx, cidr, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		By("130 long-lived Services")
		var wg sync.WaitGroup
		for w := range churnClients {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := w; i < 130; i += churnClients {
					svc := newService(ns, fmt.Sprintf("long-lived-%d", i), nil)
					Expect(k8sClient.Create(ctx, svc)).To(Succeed())
					expectIPIn(Default, svc, cidr)
				}
			})
		}
		wg.Wait()
		for round := range 5 {
			By(fmt.Sprintf("round %d: %d create/delete pairs by %d clients", round+1, churnPairs, churnClients))
			Expect(churn(ctx, ns, fmt.Sprintf("r%d", round), cidr)).To(BeEmpty(), "creates refused in round %d", round+1)
		}
		expectPoolCountsItsHolders(ctx, pool, cidr, ns)
	})

	It("grants an address asked for right after its Service was deleted, as kube-apiserver does", func(ctx SpecContext) {
		const cidr = "10.110.15.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "reuse-at-once"}
		pool := createPool(ctx, cidr, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		// kube-apiserver deletes a Service's IPAddress before the delete returns, so a create that
		// names the address next is granted; our caches may not have seen the deletion yet.
		refusedAsUpstream := 0
		for i := range 20 {
			first := newService(ns, fmt.Sprintf("first-%d", i), nil)
			Expect(k8sClient.Create(ctx, first)).To(Succeed())
			expectIPIn(Default, first, cidr)
			Expect(k8sClient.Delete(ctx, first)).To(Succeed())
			next := newService(ns, fmt.Sprintf("next-%d", i), nil, func(s *corev1.Service) { s.Spec.ClusterIP = first.Spec.ClusterIP })
			if err := k8sClient.Create(ctx, next); err != nil {
				// Only as upstream refuses: kube-apiserver's repair loop, its cache still showing
				// the Service, re-created the IPAddress.
				record := &networkingv1.IPAddress{}
				Expect(k8sClient.Get(ctx, client.ObjectKey{Name: first.Spec.ClusterIP}, record)).To(Succeed(),
					"create %d asking for %s right after its Service was deleted was refused, but the API server has no IPAddress for it: %v", i, first.Spec.ClusterIP, err)
				refusedAsUpstream++
				continue
			}
			Expect(next.Spec.ClusterIP).To(Equal(first.Spec.ClusterIP))
			Expect(k8sClient.Delete(ctx, next)).To(Succeed())
		}
		Expect(refusedAsUpstream).To(BeNumerically("<", 20), "no address was granted at all")
		AddReportEntry("refused because kube-apiserver re-created the IPAddress", refusedAsUpstream)
		expectPoolCountsItsHolders(ctx, pool, cidr, ns)
	})
})

// churn creates and at once deletes churnPairs Services in ns, by churnClients clients, and
// returns the creates that were refused, or whose ClusterIP is outside cidr.
func churn(ctx context.Context, ns, prefix, cidr string) []string {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []string
	)
	prefixCIDR := netip.MustParsePrefix(cidr)
	for w := range churnClients {
		wg.Go(func() {
			defer GinkgoRecover()
			for i := w; i < churnPairs; i += churnClients {
				svc := newService(ns, fmt.Sprintf("short-lived-%s-%d", prefix, i), nil)
				if err := k8sClient.Create(ctx, svc); err != nil {
					mu.Lock()
					refused = append(refused, err.Error())
					mu.Unlock()
					continue
				}
				if ips := clusterIPsOf(svc); len(ips) == 0 || !prefixCIDR.Contains(ips[0]) {
					mu.Lock()
					refused = append(refused, fmt.Sprintf("Service %s got ClusterIPs %v, outside its pool's %s", svc.Name, svc.Spec.ClusterIPs, cidr))
					mu.Unlock()
				}
				Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, svc))).To(Succeed())
			}
		})
	}
	wg.Wait()
	if len(refused) > 0 {
		fmt.Fprintf(GinkgoWriter, "%d of %d creates refused or misplaced, e.g.:\n  %s\n", len(refused), churnPairs,
			strings.Join(refused[:min(len(refused), 5)], "\n  "))
		var records networkingv1.IPAddressList
		Expect(k8sClient.List(ctx, &records)).To(Succeed())
		var inPool []string
		for _, r := range records.Items {
			if prefixCIDR.Contains(netip.MustParseAddr(r.Name)) && r.Spec.ParentRef != nil {
				inPool = append(inPool, r.Name+"="+r.Spec.ParentRef.Name)
			}
		}
		fmt.Fprintf(GinkgoWriter, "IPAddress objects in %s now: %d %v\n", cidr, len(inPool), inPool)
		var pools ipamv1alpha1.ClusterIPPoolList
		Expect(k8sClient.List(ctx, &pools)).To(Succeed())
		for _, p := range pools.Items {
			fmt.Fprintf(GinkgoWriter, "pool %s status %+v\n", p.Name, p.Status)
		}
		fmt.Fprintf(GinkgoWriter, "Services in %s: %d\n", ns, len(servicesIn(Default, ctx, ns)))
	}
	return refused
}

// expectPoolCountsItsHolders waits until only the Services still alive in ns hold addresses of
// pool and its status counts every Service holding one.
func expectPoolCountsItsHolders(ctx context.Context, pool *ipamv1alpha1.ClusterIPPool, cidr, ns string) {
	Eventually(func(g Gomega) {
		got := &ipamv1alpha1.ClusterIPPool{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
		for name := range servicesIn(g, ctx, ns) {
			g.Expect(name).NotTo(HavePrefix("short-lived-"), "a deleted Service is still there")
		}
		holders := holdersIn(g, ctx, cidr)
		g.Expect(got.Status.Allocated).To(BeEquivalentTo(len(holders)), "pool %s status %+v; Services holding its addresses: %v",
			pool.Name, got.Status, holders)
		expectClusterIPsConsistent(g, ctx)
	}).Should(Succeed())
}
