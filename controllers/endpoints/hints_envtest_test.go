package endpoints

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var _ = Describe("Topology hints of a Service with trafficDistribution", func() {
	var (
		ctx     = context.Background()
		ns      string
		backend = map[string]string{"app": "backend"}
	)
	eachSpecInANewNamespace(&ns)

	hintsByIP := func(g Gomega, service string) map[string]string { return hintsByIPIn(g, ctx, ns, service) }
	setTrafficDistribution := func(name string, value *string) {
		Eventually(func(g Gomega) {
			svc := &corev1.Service{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc)).To(Succeed())
			svc.Spec.TrafficDistribution = value
			g.Expect(k8sClient.Update(ctx, svc)).To(Succeed())
		}).Should(Succeed())
	}

	It("hints each ready endpoint for its zone under PreferSameZone, and removing the field removes the hints", func() {
		createService(ctx, k8sClient, ns, "backend-service", backend, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		pods := runPods(ctx, k8sClient, ns, "backend", 4, backend) // node-a (zone-a), node-b (zone-b), ...
		zoneHints := map[string]string{}
		noHints := map[string]string{}
		for _, p := range pods {
			zoneHints[p.Status.PodIP] = hintsString(&discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{
				{Name: map[string]string{"node-a": "zone-a", "node-b": "zone-b"}[p.Spec.NodeName]}}})
			noHints[p.Status.PodIP] = "-"
		}
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "backend-service")).To(Equal(noHints)) }).Should(Succeed())

		setTrafficDistribution("backend-service", ptr.To(corev1.ServiceTrafficDistributionPreferSameZone))
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "backend-service")).To(Equal(zoneHints)) }).Should(Succeed())

		// A pod that turns not ready loses its hint; the others keep theirs.
		testenv.SetPodStatus(ctx, k8sClient, pods[0], pods[0].Status.PodIP, false)
		zoneHints[pods[0].Status.PodIP] = "-"
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "backend-service")).To(Equal(zoneHints)) }).Should(Succeed())

		setTrafficDistribution("backend-service", nil)
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "backend-service")).To(Equal(noHints)) }).Should(Succeed())
	})

	It("hints for the node as well under PreferSameNode, and follows a node that moves zone (a Service without hints keeps the old zone, as upstream)", func() {
		nodeName := "moving-" + ns
		node := kit.MakeNode(nodeName).Zone("zone-x").Obj()
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		DeferCleanup(func() { Expect(k8sClient.Delete(ctx, node)).To(Succeed()) })
		svc := kit.MakeService("local-first", ns).Selector(backend).
			TrafficDistribution(corev1.ServiceTrafficDistributionPreferSameNode).TCPPort("", 80, 8080).Obj()
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		plain := kit.MakeService("plain", ns).Selector(backend).TCPPort("", 80, 8080).Obj()
		Expect(k8sClient.Create(ctx, plain)).To(Succeed())
		pod := createPod(ctx, k8sClient, ns, "on-moving-node", nodeName, backend)
		testenv.SetPodStatus(ctx, k8sClient, pod, uniquePodIP(), true)
		hints := func(zone string) map[string]string {
			return map[string]string{pod.Status.PodIP: hintsString(&discoveryv1.EndpointHints{
				ForZones: []discoveryv1.ForZone{{Name: zone}}, ForNodes: []discoveryv1.ForNode{{Name: nodeName}}})}
		}
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "local-first")).To(Equal(hints("zone-x"))) }).Should(Succeed())
		plainZone := func(g Gomega) string {
			byIP := sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "plain", endpointrules.SliceControllerName))
			g.Expect(byIP).To(HaveKey(pod.Status.PodIP))
			return ptr.Deref(byIP[pod.Status.PodIP].Zone, "")
		}
		Eventually(plainZone).Should(Equal("zone-x"))

		Eventually(func(g Gomega) {
			current := &corev1.Node{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: nodeName}, current)).To(Succeed())
			current.Labels[corev1.LabelTopologyZone] = "zone-y"
			g.Expect(k8sClient.Update(ctx, current)).To(Succeed())
		}).Should(Succeed())
		Eventually(func(g Gomega) { g.Expect(hintsByIP(g, "local-first")).To(Equal(hints("zone-y"))) }).Should(Succeed())
		Consistently(plainZone).Should(Equal("zone-x"))
	})
})

var _ = Describe("Topology aware hints of a Service with topology-mode Auto", func() {
	var (
		ctx     = context.Background()
		ns      string
		backend = map[string]string{"app": "backend"}
	)
	eachSpecInANewNamespace(&ns)

	// setNodeStatus marks a suite node Ready (or not) with 4 CPUs allocatable.
	setNodeStatus := func(name string, ready bool) {
		Eventually(func(g Gomega) {
			node := &corev1.Node{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, node)).To(Succeed())
			node.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}
			node.Status.Conditions = []corev1.NodeCondition{kit.NodeReadyCondition(ready)}
			g.Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())
		}).Should(Succeed())
	}
	events := func(g Gomega, svc *corev1.Service, eventType, reason string) []string {
		var list eventsv1.EventList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(svc.Namespace))).To(Succeed())
		var notes []string
		for _, e := range list.Items {
			if e.Regarding.Name == svc.Name && e.Type == eventType && e.Reason == reason {
				notes = append(notes, e.Note)
			}
		}
		return notes
	}

	It("shares endpoints among zones by CPU, and removes the hints with a Warning once nodes are ready in one zone only", func() {
		setNodeStatus("node-a", true)
		setNodeStatus("node-b", true)
		DeferCleanup(func() { setNodeStatus("node-a", false); setNodeStatus("node-b", false) })

		svc := kit.MakeService("auto", ns).Annotations(map[string]string{corev1.AnnotationTopologyMode: "Auto"}).Selector(backend).
			TrafficDistribution(corev1.ServiceTrafficDistributionPreferSameNode).TCPPort("", 80, 8080).Obj()
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		pods := runPods(ctx, k8sClient, ns, "backend", 4, backend) // two on node-a (zone-a), two on node-b (zone-b)
		zoneHints, noHints := map[string]string{}, map[string]string{}
		for _, p := range pods {
			zoneHints[p.Status.PodIP] = hintsString(&discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{
				{Name: map[string]string{"node-a": "zone-a", "node-b": "zone-b"}[p.Spec.NodeName]}}})
			noHints[p.Status.PodIP] = "-"
		}
		// Equal CPU, equal endpoints: each keeps its own zone; Auto wins over trafficDistribution (no node hints).
		Eventually(func(g Gomega) {
			g.Expect(hintsByIPIn(g, ctx, ns, "auto")).To(Equal(zoneHints))
			g.Expect(events(g, svc, corev1.EventTypeNormal, ReasonTopologyAwareHintsEnabled)).To(ContainElement(HintsEnabled + ", addressType: IPv4"))
		}).Should(Succeed())

		setNodeStatus("node-b", false)
		Eventually(func(g Gomega) {
			g.Expect(hintsByIPIn(g, ctx, ns, "auto")).To(Equal(noHints))
			g.Expect(events(g, svc, corev1.EventTypeWarning, ReasonTopologyAwareHintsDisabled)).To(
				ContainElement(HintsNodesReadyInOneZoneOnly + ", addressType: IPv4"))
		}).Should(Succeed())

		setNodeStatus("node-b", true)
		Eventually(func(g Gomega) { g.Expect(hintsByIPIn(g, ctx, ns, "auto")).To(Equal(zoneHints)) }).Should(Succeed())
	})
})

// hintsByIPIn reads each published endpoint's hints as hintsString prints them.
func hintsByIPIn(g Gomega, ctx context.Context, ns, service string) map[string]string {
	out := map[string]string{}
	for ip, e := range sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, service, endpointrules.SliceControllerName)) {
		out[ip] = hintsString(e.Hints)
	}
	return out
}
