package clusterdns_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/miekg/dns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var _ = Describe("CoreDNS serving our Services and EndpointSlices", func() {
	var ns string

	BeforeEach(func(ctx SpecContext) {
		ns = testenv.NewNamespace(ctx, k8sClient, "dns", nil)
	})

	fqdn := func(service string) string { return fmt.Sprintf("%s.%s.svc.cluster.local.", service, ns) }

	It("answers A and AAAA for a dual-stack ClusterIP Service with its two ClusterIPs", func(ctx SpecContext) {
		svc := clusterIPService(ns, "web")
		svc.Spec.IPFamilyPolicy = new(corev1.IPFamilyPolicyRequireDualStack)
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.ClusterIPs).To(HaveLen(2))

		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("web"), dns.TypeA)).To(Equal([]string{svc.Spec.ClusterIPs[0]}))
			g.Expect(addresses(g, fqdn("web"), dns.TypeAAAA)).To(Equal([]string{svc.Spec.ClusterIPs[1]}))
		}).Should(Succeed())
	})

	It("answers SRV for a named port with the port and the Service's name", func(ctx SpecContext) {
		svc := clusterIPService(ns, "api")
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())

		Eventually(func(g Gomega) {
			answer := query(g, "_http._tcp."+fqdn("api"), dns.TypeSRV)
			g.Expect(answer.Rcode).To(Equal(dns.RcodeSuccess))
			g.Expect(answer.Answer).To(HaveLen(1))
			srv, ok := answer.Answer[0].(*dns.SRV)
			g.Expect(ok).To(BeTrue(), "answer %v", answer.Answer[0])
			g.Expect(srv.Port).To(Equal(uint16(80)))
			g.Expect(srv.Target).To(Equal(fqdn("api")))
		}).Should(Succeed())
		By("an unnamed protocol or a port name the Service lacks is NXDOMAIN")
		Expect(query(Default, "_grpc._tcp."+fqdn("api"), dns.TypeSRV).Rcode).To(Equal(dns.RcodeNameError))
	})

	It("answers a headless Service with its ready pods only, and the not-ready ones too with publishNotReadyAddresses", func(ctx SpecContext) {
		createPod(ctx, ns, "db-0", "db", "10.244.1.10", true)
		createPod(ctx, ns, "db-1", "db", "10.244.1.11", false)
		headless := headlessService(ns, "db", "db")
		Expect(k8sClient.Create(ctx, headless)).To(Succeed())
		all := headlessService(ns, "db-all", "db")
		all.Spec.PublishNotReadyAddresses = true
		Expect(k8sClient.Create(ctx, all)).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("db"), dns.TypeA)).To(Equal([]string{"10.244.1.10"}))
			g.Expect(addresses(g, fqdn("db-all"), dns.TypeA)).To(Equal([]string{"10.244.1.10", "10.244.1.11"}))
		}).Should(Succeed())
	})

	It("answers NXDOMAIN once the Service is deleted", func(ctx SpecContext) {
		svc := clusterIPService(ns, "gone")
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("gone"), dns.TypeA)).To(Equal([]string{svc.Spec.ClusterIP}))
		}).Should(Succeed())

		Expect(k8sClient.Delete(ctx, svc)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(query(g, fqdn("gone"), dns.TypeA).Rcode).To(Equal(dns.RcodeNameError))
		}).Should(Succeed())
	})

	It("follows an EndpointSlice change within 2 s", func(ctx SpecContext) {
		createPod(ctx, ns, "cache-0", "cache", "10.244.2.10", true)
		createPod(ctx, ns, "cache-1", "cache", "10.244.2.11", true)
		Expect(k8sClient.Create(ctx, headlessService(ns, "cache", "cache"))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("cache"), dns.TypeA)).To(Equal([]string{"10.244.2.10", "10.244.2.11"}))
		}).Should(Succeed())

		By("cache-1 turns not ready; the clock starts when its EndpointSlice says so")
		setReady(ctx, ns, "cache-1", false)
		Eventually(func(g Gomega) { g.Expect(readyInSlices(ctx, g, ns, "cache")).To(Equal([]string{"10.244.2.10"})) }).Should(Succeed())
		changed := time.Now()
		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("cache"), dns.TypeA)).To(Equal([]string{"10.244.2.10"}))
		}).WithTimeout(2 * time.Second).Should(Succeed())
		GinkgoWriter.Printf("CoreDNS answered the change %s after the EndpointSlice\n", time.Since(changed).Round(time.Millisecond))

		By("cache-1 is ready again, and answers again")
		setReady(ctx, ns, "cache-1", true)
		Eventually(func(g Gomega) {
			g.Expect(readyInSlices(ctx, g, ns, "cache")).To(Equal([]string{"10.244.2.10", "10.244.2.11"}))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(addresses(g, fqdn("cache"), dns.TypeA)).To(Equal([]string{"10.244.2.10", "10.244.2.11"}))
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})
})

// query asks the suite's CoreDNS one question over UDP.
func query(g Gomega, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	answer, _, err := c.Exchange(m, dnsServer.DNSAddress)
	g.Expect(err).NotTo(HaveOccurred())
	return answer
}

// addresses are the A or AAAA records answering name, sorted; NXDOMAIN fails.
func addresses(g Gomega, name string, qtype uint16) []string {
	answer := query(g, name, qtype)
	g.Expect(answer.Rcode).To(Equal(dns.RcodeSuccess), "%s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[answer.Rcode])
	var ips []string
	for _, rr := range answer.Answer {
		switch r := rr.(type) {
		case *dns.A:
			ips = append(ips, r.A.String())
		case *dns.AAAA:
			ips = append(ips, r.AAAA.String())
		}
	}
	slices.SortFunc(ips, func(a, b string) int { return compareIPs(net.ParseIP(a), net.ParseIP(b)) })
	return ips
}

func compareIPs(a, b net.IP) int { return slices.Compare(a.To16(), b.To16()) }

func clusterIPService(ns, name string) *corev1.Service {
	return kit.MakeService(name, ns).Selector(map[string]string{"app": name}).TCPPort("http", 80, 8080).Obj()
}

// headlessService is a Service without ClusterIP over the pods labelled app.
func headlessService(ns, name, app string) *corev1.Service {
	svc := clusterIPService(ns, name)
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	svc.Spec.Selector = map[string]string{"app": app}
	return svc
}

// createPod creates a Running pod labelled app on the suite's node, with ip and the given
// readiness, as a kubelet would report it.
func createPod(ctx context.Context, ns, name, app, ip string, ready bool) {
	GinkgoHelper()
	pod := kit.MakePod(name, ns).Labels(map[string]string{"app": app}).Node(nodeName).
		ContainerPorts(kit.TCPContainerPort("http", 8080)).Obj()
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	testenv.SetPodStatus(ctx, k8sClient, pod, ip, ready)
}

// setReady flips a pod's readiness as its kubelet would.
func setReady(ctx context.Context, ns, name string, ready bool) {
	GinkgoHelper()
	pod := &corev1.Pod{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pod)).To(Succeed())
	testenv.SetPodStatus(ctx, k8sClient, pod, pod.Status.PodIP, ready)
}

// readyInSlices are the addresses the Service's EndpointSlices list as ready, sorted.
func readyInSlices(ctx context.Context, g Gomega, ns, service string) []string {
	list := &discoveryv1.EndpointSliceList{}
	g.Expect(k8sClient.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: service})).To(Succeed())
	var ips []string
	for _, slice := range list.Items {
		for _, ep := range slice.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ips = append(ips, ep.Addresses...)
			}
		}
	}
	slices.Sort(ips)
	return ips
}
