package nodeagent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/controllers/nodeagent"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// proxyHealth returns the status code of the agent's /healthz or /livez.
func proxyHealth(path string) int {
	rec := httptest.NewRecorder()
	agent.Health.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

var _ = Describe("the node agent in kube-proxy's place", func() {
	It("leaves alone a Service labelled for another proxy, and headless Services", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		other := backendService(ns)
		other.Name, other.Labels = "other-proxy", map[string]string{nodeagent.LabelServiceProxyName: "kube-proxy-b"}
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Expect(k8sClient.Create(ctx, readySlice(ns, other.Name, "10.244.5.10"))).To(Succeed())
		headless := backendService(ns)
		headless.Name, headless.Spec.ClusterIP = "headless", corev1.ClusterIPNone
		Expect(k8sClient.Create(ctx, headless)).To(Succeed())
		Expect(k8sClient.Create(ctx, readySlice(ns, headless.Name, "10.244.5.11"))).To(Succeed())
		ours := backendService(ns)
		Expect(k8sClient.Create(ctx, ours)).To(Succeed())
		Expect(k8sClient.Create(ctx, readySlice(ns, ours.Name, "10.244.5.12"))).To(Succeed())

		// The Service created last is programmed, so the agent has seen the other two.
		Eventually(nft.Dump).Should(ContainSubstring("10.244.5.12"))
		Expect(nft.Dump()).NotTo(Or(ContainSubstring(other.Spec.ClusterIP), ContainSubstring("10.244.5.10"), ContainSubstring("10.244.5.11")))
	})

	It("records a Normal Event Starting on its Node when it starts, as kube-proxy does", func(ctx context.Context) {
		Eventually(func(g Gomega) {
			var list eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(metav1.NamespaceDefault))).To(Succeed())
			var starts []string
			for _, e := range list.Items {
				if e.Regarding.Kind == "Node" && e.Regarding.Name == "node-a" && e.Reason == "Starting" {
					starts = append(starts, e.Type+" "+e.ReportingController)
				}
			}
			g.Expect(starts).To(ConsistOf("Normal kube-clusterip-datapath"))
		}).Should(Succeed())
	})

	It("drops the unallocated addresses of a ServiceCIDR created at run time", func(ctx context.Context) {
		cidr := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.200.0.0/16"}}}
		Expect(k8sClient.Create(ctx, cidr)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, cidr)).To(Succeed()) })
		Eventually(nft.Dump).Should(MatchRegexp(`cluster-ips-check ip daddr \{[^}]*10\.200\.0\.0/16[^}]*\} drop`))
	})

	It("fails /healthz and /livez while an update waits too long, and /healthz alone for a Node being drained", func(ctx context.Context) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
		Expect(k8sClient.Create(ctx, node)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, node)).To(Succeed()) })
		Eventually(func() int { return proxyHealth("/healthz") }).Should(Equal(http.StatusOK))

		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		fakeNode.FailTransactions(errors.New("nft: transaction rejected (injected)"))
		Expect(k8sClient.Create(ctx, readySlice(ns, svc.Name, "10.244.6.10"))).To(Succeed())
		Eventually(func() error { return agent.Healthy(nil) }).Should(HaveOccurred()) // the update is queued and failing
		healthClock.Step(healthTimeout)
		Expect(proxyHealth("/healthz")).To(Equal(http.StatusServiceUnavailable))
		Expect(proxyHealth("/livez")).To(Equal(http.StatusServiceUnavailable))

		fakeNode.FailTransactions(nil)
		Eventually(nft.Dump).Should(ContainSubstring("10.244.6.10"))
		Eventually(func() int { return proxyHealth("/livez") }).Should(Equal(http.StatusOK))
		Expect(proxyHealth("/healthz")).To(Equal(http.StatusOK))

		node.Spec.Taints = []corev1.Taint{{Key: nodeagent.ToBeDeletedTaint, Effect: corev1.TaintEffectNoSchedule}}
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		Eventually(func() int { return proxyHealth("/healthz") }).Should(Equal(http.StatusServiceUnavailable))
		Expect(proxyHealth("/livez")).To(Equal(http.StatusOK))
	})

	It("answers a load balancer's health check with this node's endpoint count", func(ctx context.Context) {
		ns := testenv.NewNamespace(ctx, k8sClient, "agent", nil)
		svc := backendService(ns)
		svc.Spec.Type, svc.Spec.ExternalTrafficPolicy = corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		Expect(svc.Spec.HealthCheckNodePort).NotTo(BeZero(), "the API server allocates one")
		check := func() (string, error) {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", svc.Spec.HealthCheckNodePort))
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			return fmt.Sprintf("%d %s", resp.StatusCode, body), err
		}
		body := func(n int) string { // kube-proxy's bytes: indented by tabs, no newline after
			return fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": true\n}", ns, svc.Name, n)
		}
		Eventually(check).Should(Equal("503 " + body(0)))

		slice := readySlice(ns, svc.Name, "10.244.7.10", "10.244.7.11")
		slice.Endpoints[0].NodeName = ptr.To("node-a")
		Expect(k8sClient.Create(ctx, slice)).To(Succeed())
		Eventually(check).Should(Equal("200 " + body(1)))
	})
})
