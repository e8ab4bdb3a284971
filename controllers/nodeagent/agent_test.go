package nodeagent_test

import (
	"context"
	"errors"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kube-clusterip/kube-clusterip/controllers/nodeagent"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

func backendService(ns string) *corev1.Service {
	return kit.MakeService("backend-service", ns).Selector(map[string]string{"app": "backend"}).TCPPort("", 80, 8080).Obj()
}

func readySlice(ns, service string, ips ...string) *discoveryv1.EndpointSlice {
	slice := kit.MakeEndpointSlice("", ns).GenerateName(service+"-").Service(service).TCPPort("", 8080)
	for _, ip := range ips {
		slice.Endpoints(kit.ReadyEndpoint(ip))
	}
	return slice.Obj()
}

var _ = Describe("the node agent", func() {
	It("programs a Service's ClusterIP and its endpoints, and follows their changes", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		slice := readySlice(ns, svc.Name, "10.244.1.10", "10.244.1.11")
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())

		Eventually(nft.Dump).Should(And(ContainSubstring(svc.Spec.ClusterIP), ContainSubstring("10.244.1.10"), ContainSubstring("10.244.1.11")))

		slice.Endpoints = slice.Endpoints[:1]
		Expect(k8sClient.Update(ctx, slice)).To(Succeed())
		Eventually(nft.Dump).ShouldNot(ContainSubstring("10.244.1.11"))
		Expect(nft.Dump()).To(ContainSubstring("10.244.1.10"))

		Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
		Eventually(nft.Dump).ShouldNot(ContainSubstring(svc.Spec.ClusterIP))
	})

	It("syncs only for events that change what it programs", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		slice := readySlice(ns, svc.Name, "10.244.8.10")
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		Eventually(nft.Dump).Should(ContainSubstring("10.244.8.10"))
		syncs := func() uint64 { s := fakeNode.Stats(); return s.FullSyncs + s.PartialSyncs }
		before := syncs()

		// Another proxy's slice of the same Service syncs the Service in the agent, but leaves
		// what it programs as it was: as kube-proxy, no nftables sync for it.
		other := kit.MakeEndpointSlice("", ns).GenerateName(svc.Name+"-").Service(svc.Name).TCPPort("", 8080).
			Label(nodeagent.LabelServiceProxyName, "another-proxy").Endpoints(kit.ReadyEndpoint("10.244.8.99")).Obj()
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Consistently(syncs).Should(Equal(before))

		slice.Endpoints = append(slice.Endpoints, kit.ReadyEndpoint("10.244.8.11"))
		Expect(k8sClient.Update(ctx, slice)).To(Succeed())
		Eventually(nft.Dump).Should(ContainSubstring("10.244.8.11"))
		Expect(syncs()).To(BeNumerically(">", before))
		Expect(nft.Dump()).NotTo(ContainSubstring("10.244.8.99"))
	})

	It("keeps the last good rules while nft fails, reports unhealthy, and catches up when nft recovers", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(k8sClient.Create(ctx, readySlice(ns, svc.Name, "10.244.2.10"))).To(Succeed())
		Eventually(nft.Dump).Should(ContainSubstring("10.244.2.10"))
		good := nft.Dump()

		fakeNode.FailTransactions(errors.New("nft: transaction rejected (injected)"))
		Expect(k8sClient.Create(ctx, readySlice(ns, svc.Name, "10.244.2.11"))).To(Succeed())
		Eventually(func() error { return agent.Healthy(nil) }).Should(MatchError(ContainSubstring("transaction rejected")))
		Expect(nft.Dump()).To(Equal(good), "a failed sync must leave the last good ruleset")

		fakeNode.FailTransactions(nil)
		Eventually(nft.Dump).Should(ContainSubstring("10.244.2.11"))
		Eventually(func() error { return agent.Healthy(nil) }).Should(Succeed())
	})

	It("keeps traffic to endpoints hinted for its node's zone, and follows the zone label of its Node", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		svc.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameZone)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		slice := readySlice(ns, svc.Name, "10.244.3.10", "10.244.4.10")
		for i, zone := range []string{"zone-a", "zone-b"} {
			slice.Endpoints[i].Zone = ptr.To(zone)
			slice.Endpoints[i].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}}
		}
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		// No Node object yet: no zone, so the hints cannot be used and both endpoints serve.
		Eventually(nft.Dump).Should(And(ContainSubstring("10.244.3.10"), ContainSubstring("10.244.4.10")))

		node := kit.MakeNode("node-a").Zone("zone-a").Obj()
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, node)).To(Succeed()) })
		Eventually(nft.Dump).ShouldNot(ContainSubstring("10.244.4.10"))
		Expect(nft.Dump()).To(ContainSubstring("10.244.3.10"))
		Eventually(func() float64 { return hintServices("used") }).Should(Equal(1.0))

		node.Labels[corev1.LabelTopologyZone] = "zone-b"
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		Eventually(nft.Dump).ShouldNot(ContainSubstring("10.244.3.10"))
		Expect(nft.Dump()).To(ContainSubstring("10.244.4.10"))

		// The agent caches its own Node only (OwnNodeCache), not every Node of the cluster.
		other := kit.MakeNode("node-other").Zone("zone-b").Obj()
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, other)).To(Succeed()) })
		cached := func(name string) error {
			node := &metav1.PartialObjectMetadata{}
			node.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
			return agent.Client.Get(ctx, client.ObjectKey{Name: name}, node)
		}
		Expect(cached("node-a")).To(Succeed())
		Consistently(func() bool { return apierrors.IsNotFound(cached("node-other")) }, "500ms").Should(BeTrue())

		node.Labels[corev1.LabelTopologyZone] = "zone-c"
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		Eventually(nft.Dump).Should(And(ContainSubstring("10.244.3.10"), ContainSubstring("10.244.4.10")))
		Eventually(func() float64 { return hintServices("ignored") }).Should(Equal(1.0))
		Expect(hintServices("used")).To(Equal(0.0))
	})
})

// hintServices reads the IPv4 gauge of Services whose hints were used or ignored.
func hintServices(use string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != "kube_clusterip_datapath_topology_hint_services" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["family"] == "IPv4" && labels["hints"] == use {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
