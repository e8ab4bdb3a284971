package reliability

import (
	"fmt"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var _ = Describe("a pool's status under quick changes", func() {
	It("counts no Service of its namespace after 200 Services were each created and deleted at once, by 8 clients", func(ctx SpecContext) {
		const cidr = "10.110.12.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "create-delete"}
		pool := createPool(ctx, cidr, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := w; i < 200; i += 8 {
					svc := newService(ns, fmt.Sprintf("short-lived-%d", i), nil)
					Expect(k8sClient.Create(ctx, svc)).To(Succeed())
					expectIPIn(Default, svc, cidr)
					Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
				}
			})
		}
		wg.Wait()
		Eventually(func(g Gomega) {
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
			g.Expect(servicesIn(g, ctx, ns)).To(BeEmpty())
			holders := holdersIn(g, ctx, cidr) // only Services of other specs, from the default pool
			g.Expect(got.Status.Allocated).To(BeEquivalentTo(len(holders)), "pool %s status %+v; Services holding its addresses: %v",
				pool.Name, got.Status, holders)
			expectClusterIPsConsistent(g, ctx)
		}).Should(Succeed())
	})
})
