package reliability

import (
	"fmt"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

var _ = Describe("a pool's status under quick changes", func() {
	// Pending: open bug. Under CI load (2 cores, whole suite in parallel) a create here is
	// sometimes refused by the API server with "provided IP is already allocated": our webhook
	// handed out an address in this /24 that the API server still had an IPAddress object for.
	// Gating the release of a deleted Service's address on its IPAddress being gone
	// (controllers/ipam/ipaddress.go) did not make it go away; cause not found yet. It passes
	// when run alone: `go test ./test/reliability -ginkgo.focus "quick changes"`.
	PIt("counts no Service after 200 Services were each created and deleted at once, by 8 clients", func(ctx SpecContext) {
		const cidr = "10.110.12.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "create-delete"}
		pool := createPool(ctx, cidr, labels)
		ns := newNamespace(ctx, labels)
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
			g.Expect(got.Status.Allocated).To(BeZero(), "pool %s status %+v", pool.Name, got.Status)
			expectClusterIPsConsistent(g, ctx)
		}).Should(Succeed())
	})
})
