package endpoints

import (
	"context"
	"fmt"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var _ = Describe("Endpoints of a Service with a selector", func() {
	var (
		ctx     = context.Background()
		ns      string
		backend = map[string]string{"app": "backend"}
	)
	eachSpecInANewNamespace(&ns)

	// publishBackend creates backend-service (80→8080) and n ready backend pods, and waits until
	// both APIs publish all of them.
	publishBackend := func(n int) []*corev1.Pod {
		createService(ctx, k8sClient, ns, "backend-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		pods := runPods(ctx, k8sClient, ns, "backend", n, backend)
		Eventually(func(g Gomega) {
			g.Expect(readyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service"))).To(Equal(podIPsOf(pods)))
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))).To(HaveLen(n))
		}).Should(Succeed())
		return pods
	}

	It("publishes backend-service (80→8080) over its 3 ready replicas in both APIs", func() {
		svc := createService(ctx, k8sClient, ns, "backend-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		pods := runPods(ctx, k8sClient, ns, "backend", 3, backend, tcpPort("http", 8080))

		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "backend-service")
			g.Expect(ep.Subsets).To(HaveLen(1))
			g.Expect(addressIPs(ep.Subsets[0].Addresses)).To(Equal(podIPsOf(pods)))
			g.Expect(ep.Subsets[0].NotReadyAddresses).To(BeEmpty())
			g.Expect(ep.Subsets[0].Ports).To(Equal([]corev1.EndpointPort{{Port: 8080, Protocol: corev1.ProtocolTCP}}))
			for _, a := range ep.Subsets[0].Addresses {
				g.Expect(a.TargetRef).NotTo(BeNil())
				g.Expect(a.TargetRef.Kind).To(Equal("Pod"))
				g.Expect(a.NodeName).NotTo(BeNil())
			}
			g.Expect(ep.Labels).To(HaveKeyWithValue(endpointrules.LabelEndpointsManagedBy, endpointrules.EndpointsControllerName))
			g.Expect(ep.Annotations).To(HaveKey(corev1.EndpointsLastChangeTriggerTime))
		}).Should(Succeed())

		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName)
			g.Expect(slices).To(HaveLen(1))
			s := slices[0]
			g.Expect(s.AddressType).To(Equal(discoveryv1.AddressTypeIPv4))
			g.Expect(s.Ports).To(Equal([]discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}}))
			g.Expect(s.OwnerReferences).To(ConsistOf(HaveField("UID", svc.UID)))
			byIP := sliceEndpointsByIP(slices)
			g.Expect(byIP).To(HaveLen(3))
			for _, p := range pods {
				e := byIP[p.Status.PodIP]
				g.Expect(e.Conditions).To(Equal(discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}))
				g.Expect(e.NodeName).To(Equal(ptr.To(p.Spec.NodeName)))
				g.Expect(e.Zone).To(Equal(ptr.To(map[string]string{"node-a": "zone-a", "node-b": "zone-b"}[p.Spec.NodeName])))
				g.Expect(e.TargetRef.Name).To(Equal(p.Name))
			}
		}).Should(Succeed())
	})

	It("publishes multi-port-service's http, https and metrics ports resolved by name", func() {
		createService(ctx, k8sClient, ns, "multi-port-service", backend,
			servicePortSpec{name: "http", port: 80, targetPort: intstr.FromString("http")},
			servicePortSpec{name: "https", port: 443, targetPort: intstr.FromString("https")},
			servicePortSpec{name: "metrics", port: 9090, targetPort: intstr.FromString("metrics")},
		)
		pods := runPods(ctx, k8sClient, ns, "web", 2, backend, tcpPort("http", 8080), tcpPort("https", 8443), tcpPort("metrics", 9090))

		want := []corev1.EndpointPort{
			{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP},
			{Name: "https", Port: 8443, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP},
		}
		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "multi-port-service")
			g.Expect(ep.Subsets).To(HaveLen(1))
			g.Expect(ep.Subsets[0].Ports).To(ConsistOf(want))
			g.Expect(addressIPs(ep.Subsets[0].Addresses)).To(Equal(podIPsOf(pods)))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "multi-port-service", endpointrules.SliceControllerName)
			g.Expect(slices).To(HaveLen(1))
			g.Expect(slices[0].Ports).To(HaveLen(3))
			g.Expect(slices[0].Endpoints).To(HaveLen(2))
		}).Should(Succeed())
	})

	It("moves a pod that turns NotReady to notReadyAddresses and ready: false", func() {
		pods := publishBackend(3)

		testenv.SetPodStatus(ctx, k8sClient, pods[0], pods[0].Status.PodIP, false)

		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "backend-service")
			g.Expect(ep.Subsets).To(HaveLen(1))
			g.Expect(addressIPs(ep.Subsets[0].NotReadyAddresses)).To(Equal([]string{pods[0].Status.PodIP}))
			g.Expect(ep.Subsets[0].Addresses).To(HaveLen(2))
			e := sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))[pods[0].Status.PodIP]
			g.Expect(e.Conditions.Ready).To(Equal(ptr.To(false)))
			g.Expect(e.Conditions.Serving).To(Equal(ptr.To(false)))
		}).Should(Succeed())
	})

	It("drops a deleted pod from both APIs", func() {
		pods := publishBackend(3)

		Expect(k8sClient.Delete(ctx, pods[1], client.GracePeriodSeconds(0))).To(Succeed())

		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "backend-service")
			g.Expect(readyIPs(g, ep)).To(Equal(podIPsOf([]*corev1.Pod{pods[0], pods[2]})))
			byIP := sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))
			g.Expect(byIP).To(HaveLen(2))
			g.Expect(byIP).NotTo(HaveKey(pods[1].Status.PodIP))
		}).Should(Succeed())
	})

	It("leaves someone else's change to its Endpoints until a pod changes, as upstream does, and writes deleted ones again", func() {
		pods := publishBackend(2)
		ips := func(g Gomega) []string { return readyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service")) }
		edited := &corev1.Endpoints{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "backend-service"}, edited)).To(Succeed())
		edited.Subsets[0].Addresses = append(edited.Subsets[0].Addresses, corev1.EndpointAddress{IP: "10.9.9.9"})
		Expect(k8sClient.Update(ctx, edited)).To(Succeed())
		Consistently(ips).Should(ContainElement("10.9.9.9"))

		Expect(k8sClient.Delete(ctx, edited)).To(Succeed())
		Eventually(ips).Should(Equal(podIPsOf(pods)))

		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "backend-service"}, edited)).To(Succeed())
		edited.Subsets[0].Addresses = append(edited.Subsets[0].Addresses, corev1.EndpointAddress{IP: "10.9.9.9"})
		Expect(k8sClient.Update(ctx, edited)).To(Succeed())
		Expect(k8sClient.Delete(ctx, pods[1], client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(ips).Should(Equal(podIPsOf(pods[:1])))
	})

	It("keeps a terminating pod out of the Endpoints and marks it terminating in its slice", func() {
		pods := publishBackend(2)

		Expect(k8sClient.Delete(ctx, pods[0])).To(Succeed()) // no kubelet: it stays terminating

		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "backend-service")
			g.Expect(readyIPs(g, ep)).To(Equal([]string{pods[1].Status.PodIP}))
			e := sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))[pods[0].Status.PodIP]
			g.Expect(e.Conditions).To(Equal(discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}))
		}).Should(Succeed())
	})

	It("moves a pod out of the Service when its labels stop matching, and back in when they match again", func() {
		pods := publishBackend(2)

		relabel := func(labels map[string]string) {
			patch := client.MergeFrom(pods[0].DeepCopy())
			pods[0].Labels = labels
			Expect(k8sClient.Patch(ctx, pods[0], patch)).To(Succeed())
		}
		relabel(map[string]string{"app": "debug"})
		Eventually(func(g Gomega) {
			g.Expect(readyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service"))).
				To(Equal([]string{pods[1].Status.PodIP}))
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))).
				NotTo(HaveKey(pods[0].Status.PodIP))
		}).Should(Succeed())

		relabel(backend)
		Eventually(func(g Gomega) {
			g.Expect(readyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service"))).
				To(Equal(podIPsOf(pods)))
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))).
				To(HaveKey(pods[0].Status.PodIP))
		}).Should(Succeed())
	})

	It("writes nothing when an unchanged Service is reconciled again", func() {
		publishBackend(3)
		// Let the syncs that our own writes trigger settle: writes stop changing.
		Eventually(func() int64 { return writes.Writes(ns, "") }).Should(BeNumerically(">", 0))
		settled := writes.Writes(ns, "")
		Consistently(func() int64 { return writes.Writes(ns, "") }).Should(Equal(settled))

		reads := writes.ServiceReads(ns)
		svc := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "backend-service"}, svc)).To(Succeed())
		svc.Annotations = map[string]string{"example.com/touched": "yes"} // an event, not a change of endpoints
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())

		Eventually(func() int64 { return writes.ServiceReads(ns) }).Should(BeNumerically(">", reads))
		Consistently(func() int64 { return writes.Writes(ns, "") }).Should(Equal(settled))
	})

	It("turns a burst of pod changes into one write per API", func() {
		pods := publishBackend(5)
		settled := writes.Writes(ns, "Endpoints")
		Consistently(func() int64 { return writes.Writes(ns, "Endpoints") }).Should(Equal(settled))

		var wg sync.WaitGroup
		for _, p := range pods[:4] {
			wg.Go(func() {
				defer GinkgoRecover()
				testenv.SetPodStatus(ctx, k8sClient, p, p.Status.PodIP, false)
			})
		}
		wg.Wait()

		Eventually(func(g Gomega) {
			g.Expect(notReadyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service"))).To(HaveLen(4))
		}).Should(Succeed())
		Consistently(func() int64 { return writes.Writes(ns, "Endpoints") }).Should(Equal(settled + 1))
	})

	It("truncates the Endpoints of 1001 ready pods to 1000 and spreads them over 11 slices", func() {
		// Pods first: a Service that sees its pods arrive in many small syncs may end up in more
		// slices, as upstream's would (new endpoints go to a new slice unless they all fit in
		// an unchanged one), and how many depends on timing.
		runPods(ctx, k8sClient, ns, "big", 1001, backend)
		createService(ctx, k8sClient, ns, "big-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})

		Eventually(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "big-service")
			g.Expect(ep.Annotations).To(HaveKeyWithValue(corev1.EndpointsOverCapacity, "truncated"))
			total := 0
			for _, s := range ep.Subsets {
				total += len(s.Addresses) + len(s.NotReadyAddresses)
			}
			g.Expect(total).To(Equal(1000))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "big-service", endpointrules.SliceControllerName)
			g.Expect(slices).To(HaveLen(11))
			total := 0
			for _, s := range slices {
				g.Expect(len(s.Endpoints)).To(BeNumerically("<=", 100))
				total += len(s.Endpoints)
			}
			g.Expect(total).To(Equal(1001))
		}).Should(Succeed())
	})

	It("adds a pod to the slices once its node is known, with that node's zone", func() {
		createService(ctx, k8sClient, ns, "backend-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		nodeName := "late-" + ns
		pod := createPod(ctx, k8sClient, ns, "on-late-node", nodeName, backend)
		testenv.SetPodStatus(ctx, k8sClient, pod, uniquePodIP(), true)
		Eventually(func(g Gomega) {
			g.Expect(readyIPs(g, getEndpoints(g, ctx, k8sClient, ns, "backend-service"))).To(Equal([]string{pod.Status.PodIP}))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))).To(BeEmpty())
		}, "1s").Should(Succeed())

		node := kit.MakeNode(nodeName).Zone("zone-late").Obj()
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		DeferCleanup(func() { Expect(k8sClient.Delete(ctx, node)).To(Succeed()) })

		Eventually(func(g Gomega) {
			e, ok := sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "backend-service", endpointrules.SliceControllerName))[pod.Status.PodIP]
			g.Expect(ok).To(BeTrue())
			g.Expect(e.Zone).To(Equal(ptr.To("zone-late")))
		}).Should(Succeed())
	})

	It("gives a Service without ready pods an empty placeholder slice and empty Endpoints", func() {
		createService(ctx, k8sClient, ns, "empty-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		Eventually(func(g Gomega) {
			g.Expect(getEndpoints(g, ctx, k8sClient, ns, "empty-service").Subsets).To(BeEmpty())
			slices := getSlices(g, ctx, k8sClient, ns, "empty-service", endpointrules.SliceControllerName)
			g.Expect(slices).To(HaveLen(1))
			g.Expect(slices[0].Endpoints).To(BeEmpty())
		}).Should(Succeed())
	})
})

var _ = Describe("Endpoints of a Service without a selector", func() {
	var (
		ctx = context.Background()
		ns  string
	)
	eachSpecInANewNamespace(&ns)

	userEndpointsFor := func(name string, ips ...string) *corev1.Endpoints {
		ep := &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"team": "dba"}},
			Subsets:    []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Name: "postgres", Port: 5432, Protocol: corev1.ProtocolTCP}}}},
		}
		for _, ip := range ips {
			ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: ip})
		}
		return ep
	}

	It("leaves external-database's user-written Endpoints alone and mirrors them into an EndpointSlice", func() {
		createService(ctx, k8sClient, ns, "external-database", nil, servicePortSpec{name: "postgres", port: 5432, targetPort: intstr.FromInt32(5432)})
		userEP := userEndpointsFor("external-database", "192.168.1.10", "192.168.1.11")
		Expect(k8sClient.Create(ctx, userEP)).To(Succeed())

		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)
			g.Expect(slices).To(HaveLen(1))
			g.Expect(slices[0].Labels).To(HaveKeyWithValue("team", "dba"))
			g.Expect(slices[0].OwnerReferences).To(ConsistOf(HaveField("Kind", "Endpoints")))
			byIP := sliceEndpointsByIP(slices)
			g.Expect(byIP).To(HaveLen(2))
			g.Expect(byIP["192.168.1.10"].Conditions.Ready).To(Equal(ptr.To(true)))
			g.Expect(slices[0].Ports).To(Equal([]discoveryv1.EndpointPort{{Name: ptr.To("postgres"), Port: ptr.To[int32](5432), Protocol: ptr.To(corev1.ProtocolTCP)}}))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			ep := getEndpoints(g, ctx, k8sClient, ns, "external-database")
			g.Expect(ep.ResourceVersion).To(Equal(userEP.ResourceVersion))
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.SliceControllerName)).To(BeEmpty())
		}).Should(Succeed())
		Expect(writes.Writes(ns, "Endpoints")).To(BeZero())
	})

	It("follows the user's changes to the Endpoints", func() {
		createService(ctx, k8sClient, ns, "external-database", nil, servicePortSpec{name: "postgres", port: 5432, targetPort: intstr.FromInt32(5432)})
		userEP := userEndpointsFor("external-database", "192.168.1.10")
		Expect(k8sClient.Create(ctx, userEP)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName))).To(HaveLen(1))
		}).Should(Succeed())

		userEP.Subsets[0].Addresses = []corev1.EndpointAddress{{IP: "192.168.1.20"}}
		userEP.Subsets[0].NotReadyAddresses = []corev1.EndpointAddress{{IP: "192.168.1.21"}}
		Expect(k8sClient.Update(ctx, userEP)).To(Succeed())

		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)
			g.Expect(slices).To(HaveLen(1))
			byIP := sliceEndpointsByIP(slices)
			g.Expect(byIP).To(HaveLen(2))
			g.Expect(byIP["192.168.1.20"].Conditions.Ready).To(Equal(ptr.To(true)))
			g.Expect(byIP["192.168.1.21"].Conditions.Ready).To(Equal(ptr.To(false)))
		}).Should(Succeed())
	})

	It("mirrors the first 1000 addresses of a larger subset and warns on the Endpoints about the rest", func() {
		createService(ctx, k8sClient, ns, "external-database", nil, servicePortSpec{name: "postgres", port: 5432, targetPort: intstr.FromInt32(5432)})
		ips := make([]string, DefaultMaxEndpointsPerSubset+1)
		for i := range ips {
			ips[i] = fmt.Sprintf("192.168.%d.%d", 10+i/250, 1+i%250)
		}
		userEP := userEndpointsFor("external-database", ips...)
		Expect(k8sClient.Create(ctx, userEP)).To(Succeed())

		Eventually(func(g Gomega) {
			slices := getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)
			g.Expect(sliceEndpointsByIP(slices)).To(HaveLen(DefaultMaxEndpointsPerSubset))
			var list eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(ContainElement(And(
				HaveField("Regarding.UID", userEP.UID),
				HaveField("Reason", "TooManyAddressesToMirror"),
				HaveField("Note", ContainSubstring("1 addresses were skipped")))))
		}).Should(Succeed())
	})

	It("does not mirror Endpoints labelled skip-mirror, and removes mirrored slices when the label appears", func() {
		createService(ctx, k8sClient, ns, "external-database", nil, servicePortSpec{name: "postgres", port: 5432, targetPort: intstr.FromInt32(5432)})
		userEP := userEndpointsFor("external-database", "192.168.1.10")
		Expect(k8sClient.Create(ctx, userEP)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)).To(HaveLen(1))
		}).Should(Succeed())

		userEP.Labels[discoveryv1.LabelSkipMirror] = "true"
		Expect(k8sClient.Update(ctx, userEP)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)).To(BeEmpty())
		}).Should(Succeed())
	})

	It("removes mirrored slices when the Service gains a selector", func() {
		svc := createService(ctx, k8sClient, ns, "external-database", nil, servicePortSpec{name: "postgres", port: 5432, targetPort: intstr.FromInt32(5432)})
		Expect(k8sClient.Create(ctx, userEndpointsFor("external-database", "192.168.1.10"))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)).To(HaveLen(1))
		}).Should(Succeed())

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), svc)).To(Succeed())
		svc.Spec.Selector = map[string]string{"app": "database"}
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-database", endpointrules.MirroringControllerName)).To(BeEmpty())
		}).Should(Succeed())
	})
})

var _ = Describe("Services we leave alone", func() {
	var (
		ctx = context.Background()
		ns  string
	)
	eachSpecInANewNamespace(&ns)

	It("publishes nothing for an ExternalName Service, even with a selector", func() {
		svc := kit.MakeService("external-name", ns).ExternalName("db.example.com").Selector(map[string]string{"app": "x"}).Obj()
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		runPods(ctx, k8sClient, ns, "x", 1, map[string]string{"app": "x"})
		Eventually(func() int64 { return writes.ServiceReads(ns) }).Should(BeNumerically(">", 0))
		Consistently(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "external-name"}, &corev1.Endpoints{})
			g.Expect(err).To(HaveOccurred())
			g.Expect(client.IgnoreNotFound(err)).To(Succeed())
			g.Expect(getSlices(g, ctx, k8sClient, ns, "external-name", endpointrules.SliceControllerName)).To(BeEmpty())
		}).Should(Succeed())
	})

	It("removes our slices when a Service loses its selector, and leaves its Endpoints to the user", func() {
		backend := map[string]string{"app": "backend"}
		svc := createService(ctx, k8sClient, ns, "was-selected", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		runPods(ctx, k8sClient, ns, "backend", 1, backend)
		Eventually(func(g Gomega) {
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "was-selected", endpointrules.SliceControllerName))).To(HaveLen(1))
		}).Should(Succeed())

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), svc)).To(Succeed())
		svc.Spec.Selector = nil
		Expect(k8sClient.Update(ctx, svc)).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "was-selected", endpointrules.SliceControllerName)).To(BeEmpty())
			g.Expect(getEndpoints(g, ctx, k8sClient, ns, "was-selected").Subsets).To(HaveLen(1))
		}).Should(Succeed())
	})
})

var _ = Describe("Service deletion", func() {
	It("deletes the Endpoints we wrote", func() {
		ctx := context.Background()
		ns := testenv.NewNamespace(ctx, k8sClient, "endpoints", nil)
		svc := createService(ctx, k8sClient, ns, "short-lived", map[string]string{"app": "x"}, servicePortSpec{port: 80, targetPort: intstr.FromInt32(80)})
		Eventually(func(g Gomega) { getEndpoints(g, ctx, k8sClient, ns, "short-lived") }).Should(Succeed())

		Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "short-lived"}, &corev1.Endpoints{})
			g.Expect(client.IgnoreNotFound(err)).To(Succeed())
			g.Expect(err).To(HaveOccurred(), fmt.Sprintf("Endpoints %s/short-lived still exist", ns))
		}).Should(Succeed())
	})
})
