package diagnose_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var backendLabels = map[string]string{"app": "backend"}

func httpPort(port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

var _ = Describe("kube-clusterip diagnose svc/NAME", func() {
	var namespace string
	BeforeEach(func(ctx SpecContext) {
		namespace = testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)
	})

	It("calls a Service healthy when ready pods back it and its endpoints agree (exit 0)", func(ctx SpecContext) {
		svc := createService(ctx, namespace)
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		createPod(ctx, namespace, podSpec{name: "backend-1", ip: "10.244.2.11", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		publish(ctx, svc, 8080, []string{"10.244.1.10", "10.244.2.11"}, nil)

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout)
		Expect(r.report.Verdict).To(Equal(diagnose.VerdictHealthy))
		Expect(r.report.Service.ClusterIPs).To(ConsistOf(diagnose.ClusterIPSummary{IP: svc.Spec.ClusterIP, Pool: "default"}))
		Expect(r.report.Service.DNSNames).To(Equal([]string{"backend", "backend." + namespace, "backend." + namespace + ".svc.cluster.local"}))
		Expect(r.report.Service.EnvVars).To(ContainElements(
			corev1.EnvVar{Name: "BACKEND_SERVICE_HOST", Value: svc.Spec.ClusterIP},
			corev1.EnvVar{Name: "BACKEND_SERVICE_PORT", Value: "80"},
			corev1.EnvVar{Name: "BACKEND_SERVICE_PORT_HTTP", Value: "80"}))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckSelector, "matches 2 pod(s)"))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckEndpointSlices, "2 endpoint(s): 2 ready"))

		text, code := runDiagnoseText(ctx, namespace, "backend")
		Expect(code).To(Equal(diagnose.ExitHealthy))
		Expect(text).To(ContainSubstring("verdict: healthy (exit status 0)"))
		AddReportEntry("text output", text)
	})

	It("names the pod one label off when the selector has a typo (exit 1)", func(ctx SpecContext) {
		svc := createService(ctx, namespace)
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: map[string]string{"app": "backnd"}, ports: []corev1.ContainerPort{httpPort(8080)}})
		createPod(ctx, namespace, podSpec{name: "frontend-0", ip: "10.244.1.20", labels: map[string]string{"app": "frontend"}})
		publish(ctx, svc, 8080, nil, nil)

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckSelector,
			"selector app=backend matches no pod in namespace "+namespace+"; closest: pod backend-0 has app=backnd (selector wants app=backend)"))
		Expect(r.report.Findings).NotTo(ContainElement(HaveField("Message", ContainSubstring("frontend-0"))))

		text, code := runDiagnoseText(ctx, namespace, "backend")
		Expect(code).To(Equal(diagnose.ExitProblem))
		Expect(text).To(ContainSubstring("fix: fix the differing label"))
		AddReportEntry("text output", text)
	})

	It("names the namespace where the selector's pods run instead (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace)
		elsewhere := testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)
		createPod(ctx, elsewhere, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels})

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckSelector, "matches 1 pod(s) in namespace "+elsewhere+" instead: backend-0"))
	})

	It("reports a selector that matches no pod at all, and the missing endpoints (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace)

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckSelector, "selector app=backend matches no pod in namespace "+namespace))
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckEndpoints, "no Endpoints and no EndpointSlices"))
	})

	It("shows the failing condition and container of pods that are not ready (exit 1)", func(ctx SpecContext) {
		svc := createService(ctx, namespace)
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}, notReady: true})
		publish(ctx, svc, 8080, nil, []string{"10.244.1.10"})

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckReadiness,
			"pod backend-0 (10.244.1.10) is not ready: Ready=False (ContainersNotReady: containers with unready status: [app]); container app: running, readiness probe failing"))
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckReadiness, "none of the 1 selected pod(s) is ready"))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckEndpointSlices, "0 ready"))
	})

	It("warns about a numeric targetPort no container declares, without failing (exit 0)", func(ctx SpecContext) {
		svc := createService(ctx, namespace)
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(80)}})
		publish(ctx, svc, 8080, []string{"10.244.1.10"}, nil)

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout)
		Expect(r.report.Verdict).To(Equal(diagnose.VerdictWarnings))
		Expect(r.report).To(haveFinding(diagnose.Warning, diagnose.CheckPorts,
			"targetPort 8080/TCP is declared by no container of the selected pods (backend-0 declares http 80/TCP)"))
	})

	It("names the pods on which a named targetPort does not resolve (exit 1)", func(ctx SpecContext) {
		svc := createService(ctx, namespace, func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromString("http") })
		createPod(ctx, namespace, podSpec{name: "backend-0", ip: "10.244.1.10", labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		createPod(ctx, namespace, podSpec{name: "backend-1", ip: "10.244.1.11", labels: backendLabels,
			ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}})
		publish(ctx, svc, 8080, []string{"10.244.1.10"}, nil)

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckPorts,
			`targetPort "http" of port 80/TCP (http) is declared by no container port of 1 of 2 selected pods: backend-1 (backend-1 declares web 8080/TCP)`))
		Expect(r.report).NotTo(haveFinding(diagnose.Problem, diagnose.CheckEndpointSlices, ""))
	})

	Context("for a Service without a selector", func() {
		selectorless := func(s *corev1.Service) {
			s.Spec.Selector = nil
			s.Spec.Ports = []corev1.ServicePort{{Name: "postgres", Port: 5432}}
		}

		It("reports that no Endpoints object exists (exit 1)", func(ctx SpecContext) {
			createService(ctx, namespace, selectorless)

			r := runDiagnose(ctx, namespace, "backend")
			Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
			Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckEndpoints, "the Service has no selector and no Endpoints object backend exists"))
		})

		It("finds the user's Endpoints mirrored into an EndpointSlice (exit 0)", func(ctx SpecContext) {
			svc := createService(ctx, namespace, selectorless)
			writeEndpoints(ctx, svc, []string{"192.0.2.10"}, nil, 5432, nil)
			writeSlice(ctx, svc, endpointrules.MirroringControllerName, 5432, sliceEndpoint{ip: "192.0.2.10", ready: true})

			r := runDiagnose(ctx, namespace, "backend")
			Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout)
			Expect(r.report.Verdict).To(Equal(diagnose.VerdictHealthy))
			Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckEndpointSlices, "Endpoints backend are mirrored into EndpointSlice(s)"))
		})

		It("reports the user's Endpoints not mirrored (exit 1)", func(ctx SpecContext) {
			svc := createService(ctx, namespace, selectorless)
			writeEndpoints(ctx, svc, []string{"192.0.2.10"}, nil, 5432, nil)

			r := runDiagnose(ctx, namespace, "backend")
			Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
			Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckEndpointSlices, "Endpoints backend are not mirrored"))
		})
	})

	It("warns that truncated Endpoints hide addresses the EndpointSlices list (exit 0)", func(ctx SpecContext) {
		svc := createService(ctx, namespace)
		ips := []string{"10.244.1.10", "10.244.1.11", "10.244.1.12"}
		for i, ip := range ips {
			createPod(ctx, namespace, podSpec{name: "backend-" + string(rune('0'+i)), ip: ip, labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		}
		writeEndpoints(ctx, svc, ips[:2], nil, 8080, map[string]string{corev1.EndpointsOverCapacity: "truncated"})
		writeSlice(ctx, svc, "endpointslice-controller.clusterip.dev", 8080,
			sliceEndpoint{ip: ips[0], ready: true}, sliceEndpoint{ip: ips[1], ready: true}, sliceEndpoint{ip: ips[2], ready: true})

		r := runDiagnose(ctx, namespace, "backend")
		Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout)
		Expect(r.report).To(haveFinding(diagnose.Warning, diagnose.CheckEndpoints,
			"Endpoints backend are truncated (endpoints.kubernetes.io/over-capacity=truncated): they list 2 addresses"))
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckEndpointSlices, "3 endpoint(s): 3 ready"))
	})

	It("reports a Service that does not exist, naming the namespace that has one (exit 1)", func(ctx SpecContext) {
		createService(ctx, namespace, func(s *corev1.Service) { s.Name = "payments" })
		other := testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)

		r := runDiagnose(ctx, other, "payments")
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout)
		Expect(r.report.Findings).To(ConsistOf(And(
			HaveField("Message", "Service "+other+"/payments not found"),
			HaveField("Fix", ContainSubstring("pass -n "+namespace)))))
	})

	It("exits 2 with a clear message when RBAC forbids reading pods", func(ctx SpecContext) {
		createService(ctx, namespace)
		grantServiceReader(ctx, namespace, "alice")

		r := runDiagnose(ctx, namespace, "backend", "--as", "alice")
		Expect(r.exitCode).To(Equal(diagnose.ExitError))
		Expect(r.stdout).To(BeEmpty())
		Expect(r.stderr).To(ContainSubstring("RBAC forbids reading pods in namespace " + namespace))
		Expect(r.stderr).To(ContainSubstring("fix: ask for a Role in " + namespace + " granting get and list on pods"))
		AddReportEntry("stderr", r.stderr)
	})

	It("exits 2 on a usage error", func(ctx SpecContext) {
		r := runDiagnose(ctx, namespace, "backend", "-o", "wide")
		Expect(r.exitCode).To(Equal(diagnose.ExitError))
		Expect(r.stderr).To(ContainSubstring("the output is text, json or yaml"))
	})
})

// grantServiceReader lets the user read Services of the namespace, and nothing else.
func grantServiceReader(ctx context.Context, namespace, user string) {
	GinkgoHelper()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "service-reader", Namespace: namespace},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list"}}},
	}
	Expect(k8sClient.Create(ctx, role)).To(Succeed())
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "service-reader", Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	Expect(k8sClient.Create(ctx, binding)).To(Succeed())
}

// The node's table is listed by a wrapper around nft that loads testdata/nft-table.nft into a
// scratch network namespace first: the host's nftables are never read nor touched.
var _ = Describe("kube-clusterip diagnose svc/NAME --datapath", func() {
	var namespace string
	BeforeEach(func(ctx SpecContext) {
		if os.Geteuid() != 0 {
			Skip("--datapath specs need root for a scratch network namespace (unshare -n)")
		}
		if _, err := exec.LookPath("nft"); err != nil {
			Skip("--datapath specs need nft (Debian package nftables)")
		}
		namespace = testenv.NewNamespace(ctx, k8sClient, "diagnose", nil)
	})

	// nftInScratchNamespace writes an nft wrapper that runs in a fresh network namespace holding
	// the ruleset file, or nothing when ruleset is empty.
	nftInScratchNamespace := func(ruleset string) string {
		GinkgoHelper()
		load := "true"
		if ruleset != "" {
			abs, err := filepath.Abs(ruleset)
			Expect(err).NotTo(HaveOccurred())
			load = "nft -f " + abs
		}
		// diagnose puts the wrapper's directory first on $PATH while knftables looks for nft, so
		// the wrapper runs the real nft by its full path.
		nft, err := exec.LookPath("nft")
		Expect(err).NotTo(HaveOccurred())
		load = strings.ReplaceAll(load, "nft -f", nft+" -f")
		wrapper := filepath.Join(GinkgoT().TempDir(), "nft")
		script := "#!/bin/sh\nexec unshare -n sh -c '" + load + " && exec " + nft + " \"$@\"' nft \"$@\"\n"
		Expect(os.WriteFile(wrapper, []byte(script), 0o755)).To(Succeed())
		return wrapper
	}

	// backendAt creates the Service at the ClusterIP the fixture table programs, with the pods and
	// the endpoints of the given IPs; the Service is deleted afterwards to free the address.
	backendAt := func(ctx context.Context, ips ...string) {
		GinkgoHelper()
		svc := createService(ctx, namespace, func(s *corev1.Service) { s.Spec.ClusterIP = "10.96.0.10" })
		DeferCleanup(func(ctx SpecContext) { Expect(k8sClient.Delete(ctx, svc)).To(Succeed()) })
		for i, ip := range ips {
			createPod(ctx, namespace, podSpec{name: fmt.Sprintf("backend-%d", i), ip: ip, labels: backendLabels, ports: []corev1.ContainerPort{httpPort(8080)}})
		}
		publish(ctx, svc, 8080, ips, nil)
	}

	It("finds the ClusterIP:port sent to the endpoints the slices list (exit 0)", func(ctx SpecContext) {
		backendAt(ctx, "10.244.1.10", "10.244.1.11")

		r := runDiagnose(ctx, namespace, "backend", "--datapath", "--node-name", "node-a", "--nft", nftInScratchNamespace("testdata/nft-table.nft"))
		Expect(r.exitCode).To(Equal(diagnose.ExitHealthy), r.stdout+r.stderr)
		Expect(r.report).To(haveFinding(diagnose.OK, diagnose.CheckDatapath,
			"node node-a sends 10.96.0.10:80/tcp to 10.244.1.10:8080, 10.244.1.11:8080, as the EndpointSlices say"))
	})

	It("reports a node that still sends traffic to an endpoint the slices dropped (exit 1)", func(ctx SpecContext) {
		backendAt(ctx, "10.244.1.10")

		r := runDiagnose(ctx, namespace, "backend", "--datapath", "--node-name", "node-a", "--nft", nftInScratchNamespace("testdata/nft-table.nft"))
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout+r.stderr)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDatapath,
			"node node-a sends 10.96.0.10:80/tcp to [10.244.1.10:8080, 10.244.1.11:8080], the EndpointSlices say [10.244.1.10:8080]"))
	})

	It("reports a node without the table (exit 1)", func(ctx SpecContext) {
		backendAt(ctx, "10.244.1.10")

		r := runDiagnose(ctx, namespace, "backend", "--datapath", "--node-name", "node-a", "--nft", nftInScratchNamespace(""))
		Expect(r.exitCode).To(Equal(diagnose.ExitProblem), r.stdout+r.stderr)
		Expect(r.report).To(haveFinding(diagnose.Problem, diagnose.CheckDatapath, "node node-a has no nftables table ip kube-clusterip"))
	})
})
