package diagnose_test

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/miekg/dns"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/test/clusterdns"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// The --dns specs ask a real CoreDNS on 127.0.0.1 that reads the suite's API server. Each spec
// has a cluster DNS Service of its own (--dns-service), so faults stay inside the spec.
var _ = Describe("kube-clusterip diagnose svc/NAME --dns, against a real CoreDNS", Ordered, ContinueOnFailure, func() {
	var (
		coreDNS   *clusterdns.Server
		namespace string
		dnsFlags  []string
	)
	BeforeAll(func(ctx SpecContext) {
		var err error
		coreDNS, err = clusterdns.Start(ctx, clusterdns.Config{Kubeconfig: kubeconfig, DNSAddress: "127.0.0.1:0", Log: GinkgoWriter})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(coreDNS.Stop)
	})
	// kubeDNS creates the spec's cluster DNS Service with one CoreDNS endpoint, ready or not.
	kubeDNS := func(ctx context.Context, ready bool) string {
		dnsNamespace := testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)
		svc := createService(ctx, dnsNamespace, func(s *corev1.Service) {
			s.Name = "kube-dns"
			s.Spec.Selector = map[string]string{"k8s-app": "kube-dns"}
			s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}
		})
		if ready {
			writeSlice(ctx, svc, "endpointslice-controller.clusterip.dev", 53, sliceEndpoint{ip: "10.244.0.2", ready: true})
		} else {
			writeSlice(ctx, svc, "endpointslice-controller.clusterip.dev", 53, sliceEndpoint{ip: "10.244.0.2"})
		}
		return dnsNamespace + "/kube-dns"
	}
	BeforeEach(func(ctx SpecContext) {
		namespace = testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)
		dnsFlags = []string{"--dns", "--dns-service", kubeDNS(ctx, true), "--dns-server", coreDNS.DNSAddress}
	})
	// healthyBackend is Service backend with one ready pod and its endpoints published, so that
	// only DNS can be at fault.
	healthyBackend := func(ctx context.Context) *corev1.Service {
		svc := createService(ctx, namespace)
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		publish(ctx, svc, 8080, []string{"10.244.1.10"}, nil)
		return svc
	}

	It("finds every name answering as the API says: FQDN, NAME.NS, short name, SRV (exit 0)", func(ctx SpecContext) {
		svc := healthyBackend(ctx)
		fqdn := "backend." + namespace + ".svc.cluster.local."
		var r result
		// CoreDNS learns of the Service through its watch.
		Eventually(func(g Gomega) {
			r = runDiagnose(ctx, namespace, "backend", dnsFlags...)
			g.Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "A "+fqdn+" -> "+svc.Spec.ClusterIP+", as the API says"))
		}).Should(Succeed())
		Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "backend."+namespace+" (from a pod in "+namespace+") -> "+fqdn))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "backend (from a pod in "+namespace+") -> "+fqdn))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "SRV _http._tcp."+fqdn+" -> 80 "+fqdn))
		Expect(r.report.Findings).NotTo(ContainElement(And(HaveField("Check", diagnose.CheckDNS), HaveField("Severity", diagnose.Problem))))

		text, _ := runDiagnoseText(ctx, namespace, "backend", dnsFlags...)
		Expect(text).To(ContainSubstring("OK       dns"))
		AddReportEntry("text output", text)
	})

	It("says the short name fails from a pod of another namespace, and what to use instead (exit 1)", func(ctx SpecContext) {
		healthyBackend(ctx)
		Eventually(func(g Gomega) {
			r := runDiagnose(ctx, namespace, "backend", append(dnsFlags, "--from-namespace", "frontend")...)
			g.Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
			g.Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDNS, "backend (from a pod in frontend): NXDOMAIN for every name of the search path"))
			g.Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "backend."+namespace+" (from a pod in frontend) -> backend."+namespace+".svc.cluster.local."))
		}).Should(Succeed())
		text, _ := runDiagnoseText(ctx, namespace, "backend", append(dnsFlags, "--from-namespace", "frontend")...)
		Expect(text).To(ContainSubstring("fix: wrong namespace: the Service is in " + namespace + "; from frontend use backend." + namespace))
		AddReportEntry("text output", text)
	})

	It("answers a headless Service with its ready pods only, as its EndpointSlice says (exit 0 for DNS)", func(ctx SpecContext) {
		svc := createService(ctx, namespace, func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })
		publish(ctx, svc, 8080, []string{"10.244.1.10"}, []string{"10.244.1.11"})
		Eventually(func(g Gomega) {
			r := runDiagnose(ctx, namespace, "backend", dnsFlags...)
			g.Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDNS, "A backend."+namespace+".svc.cluster.local. -> 10.244.1.10, as the API says"))
		}).Should(Succeed())
	})

	It("says CoreDNS has no ready endpoint behind the cluster DNS Service (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace)
		noEndpoints := kubeDNS(ctx, false)
		r := runDiagnose(ctx, namespace, "backend", "--dns", "--dns-service", noEndpoints, "--dns-server", coreDNS.DNSAddress)
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDNS, "cluster DNS Service "+noEndpoints+" has no ready endpoint: CoreDNS is not running or not ready"))
	})

	It("says the cluster has no DNS Service when kube-dns is missing (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace)
		r := runDiagnose(ctx, namespace, "backend", "--dns", "--dns-service", "kube-system/kube-dns-missing")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDNS, "no cluster DNS Service kube-system/kube-dns-missing"))
	})

	It("says CoreDNS does not answer when it is down, without hanging (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace)
		down := net.JoinHostPort("127.0.0.1", strconv.Itoa(closedUDPPort()))
		start := time.Now()
		r := runDiagnose(ctx, namespace, "backend", "--dns", "--dns-service", dnsFlags[2], "--dns-server", down)
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDNS, "no answer from the cluster DNS "+down))
		Expect(time.Since(start)).To(BeNumerically("<", 2*diagnose.DNSQueryTimeout+5*time.Second), "diagnose --dns must give up on a silent DNS server")
	})

	It("says which name answers other than the API when a DNS server serves a wrong address (exit 1)", func(ctx SpecContext) {
		svc := healthyBackend(ctx)
		fqdn := "backend." + namespace + ".svc.cluster.local."
		// The injected fault: a DNS server (a stale or foreign one) answering the Service's FQDN
		// with an address the Service does not have, and NXDOMAIN for every other name.
		wrong := staleDNS(fqdn, "10.96.255.254")
		r := runDiagnose(ctx, namespace, "backend", "--dns", "--dns-service", dnsFlags[2], "--dns-server", wrong)
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDNS,
			"A "+fqdn+": the DNS answers 10.96.255.254, the API says "+svc.Spec.ClusterIP))
		text, _ := runDiagnoseText(ctx, namespace, "backend", "--dns", "--dns-service", dnsFlags[2], "--dns-server", wrong)
		Expect(text).To(ContainSubstring("answer differs"))
	})

	It("refuses a Service name that is not a DNS label (exit 2)", func(ctx SpecContext) {
		r := runDiagnose(ctx, namespace, "Backend_Service", dnsFlags...)
		Expect(r.exitCode).To(Equal(diagnose.ExitError))
		Expect(r.stderr).To(ContainSubstring(`"Backend_Service" is not a valid Service name, so no DNS name can reach it`))
	})
})

// closedUDPPort is a loopback UDP port nothing listens on (it was free a moment ago).
func closedUDPPort() int {
	GinkgoHelper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	port := c.LocalAddr().(*net.UDPAddr).Port
	Expect(c.Close()).To(Succeed())
	return port
}

// staleDNS serves, on a loopback UDP port, one A record (name -> ip) and NXDOMAIN for anything
// else, until the spec ends; it returns its address.
func staleDNS(name, ip string) string {
	GinkgoHelper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	server := &dns.Server{PacketConn: conn, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		reply := new(dns.Msg)
		reply.SetReply(req)
		q := req.Question[0]
		switch {
		case q.Name == name && q.Qtype == dns.TypeA:
			reply.Answer = append(reply.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(ip)})
		case q.Name != name:
			reply.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(reply)
	})}
	go func() { _ = server.ActivateAndServe() }()
	DeferCleanup(server.Shutdown)
	return conn.LocalAddr().String()
}
