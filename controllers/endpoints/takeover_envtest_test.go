package endpoints

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// upstreamSlice is an EndpointSlice as kube-controller-manager's controller (managedBy) writes
// one for a Service, with one ready endpoint.
func upstreamSlice(ns, service, managedBy, ip string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: service + "-",
			Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

// Taking over a live cluster: kube-controller-manager's EndpointSlice and mirroring controllers
// wrote slices, then were turned off, and ours start.
var _ = Describe("taking over from kube-controller-manager", func() {
	var ns string
	eachSpecInANewNamespace(&ns)

	It("deletes the slices its controllers left, once ours are written, and keeps those they write after we started", func(ctx context.Context) {
		running.Stop() // not installed yet
		DeferCleanup(func() {
			if running == nil {
				running = startManager(suiteCfg, writes, Options{BatchPeriod: suiteBatchPeriod})
			}
		})
		running = nil
		pods := runPods(ctx, k8sClient, ns, "web", 1, map[string]string{"app": "web"})
		createService(ctx, k8sClient, ns, "web", map[string]string{"app": "web"}, servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		// Its slice still shows a pod long gone.
		Expect(k8sClient.Create(ctx, upstreamSlice(ns, "web", endpointrules.UpstreamSliceControllerName, "10.250.0.1"))).To(Succeed())
		selectorless := kit.MakeService("db", ns).Port(corev1.ServicePort{Port: 5432, Protocol: corev1.ProtocolTCP}).Obj()
		Expect(k8sClient.Create(ctx, selectorless)).To(Succeed())
		Expect(k8sClient.Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.10"}},
				Ports: []corev1.EndpointPort{{Port: 5432, Protocol: corev1.ProtocolTCP}}}}})).To(Succeed())
		Expect(k8sClient.Create(ctx, upstreamSlice(ns, "db", endpointrules.UpstreamMirroringControllerName, "192.0.2.99"))).To(Succeed())
		// Creation times count in seconds: ours starts in a later one.
		time.Sleep(1100 * time.Millisecond)

		running = startManager(suiteCfg, writes, Options{BatchPeriod: suiteBatchPeriod})
		Eventually(func(g Gomega) {
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "web", endpointrules.SliceControllerName))).To(HaveKey(pods[0].Status.PodIP))
			g.Expect(getSlices(g, ctx, k8sClient, ns, "web", endpointrules.UpstreamSliceControllerName)).To(BeEmpty())
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "db", endpointrules.MirroringControllerName))).To(HaveKey("192.0.2.10"))
			g.Expect(getSlices(g, ctx, k8sClient, ns, "db", endpointrules.UpstreamMirroringControllerName)).To(BeEmpty())
		}).Should(Succeed())

		// Its controller still running writes again: that slice stays, through our next syncs.
		Expect(k8sClient.Create(ctx, upstreamSlice(ns, "web", endpointrules.UpstreamSliceControllerName, pods[0].Status.PodIP))).To(Succeed())
		more := runPods(ctx, k8sClient, ns, "web2", 1, map[string]string{"app": "web"})
		Eventually(func(g Gomega) {
			g.Expect(sliceEndpointsByIP(getSlices(g, ctx, k8sClient, ns, "web", endpointrules.SliceControllerName))).To(HaveKey(more[0].Status.PodIP))
		}).Should(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(getSlices(g, ctx, k8sClient, ns, "web", endpointrules.UpstreamSliceControllerName)).To(HaveLen(1))
		}, 2*time.Second).Should(Succeed())
	})
})
