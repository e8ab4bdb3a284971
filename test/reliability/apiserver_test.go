package reliability

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// apiServerOutage is how long the API server stays down; the manager must keep running through it.
const apiServerOutage = 10 * time.Second

var _ = Describe("kube-apiserver stopped and started again on the same etcd while the manager runs", func() {
	It("the manager reconnects and converges without a restart", func(ctx SpecContext) {
		ensureNode(ctx)
		const poolCIDR = "10.110.7.0/24"
		labels := map[string]string{"reliability.clusterip.dev/scenario": "apiserver-restart"}
		pool := createPool(ctx, poolCIDR, labels)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", labels)
		pid := manager.pid()

		By("before the outage: a Service from the tenant pool with one ready pod")
		backend := map[string]string{"app": "backend"}
		before := newService(ns, "before", backend)
		Expect(k8sClient.Create(ctx, before)).To(Succeed())
		expectIPIn(Default, before, poolCIDR)
		first := runPod(ctx, ns, "backend-0", backend, true)
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, "before", podIPs(first), nil)
		}).Should(Succeed())

		datapath := datapathMissing() == ""
		var web *corev1.Service
		if datapath {
			By("the datapath serves a Service whose pod really answers (private network namespace)")
			web = serveLocalPod(ctx, ns)
			Eventually(func() error { return get(web) }).Should(Succeed())
		} else {
			By("no datapath check: it needs " + datapathMissing())
		}

		By("kube-apiserver stops; the manager keeps running meanwhile")
		apiServer := testEnv.ControlPlane.GetAPIServer()
		stopAPIServer(apiServer)
		restarted := false
		DeferCleanup(func() {
			if !restarted { // leave a control plane for the other specs
				Expect(apiServer.Start()).To(Succeed())
			}
		})
		Consistently(func(g Gomega) {
			g.Expect(manager.running()).To(BeTrue(), "the manager exited while the API server was down")
			if datapath {
				g.Expect(get(web)).To(Succeed(), "traffic to the ClusterIP while the API server is down")
			}
		}).WithTimeout(apiServerOutage).Should(Succeed())

		By("kube-apiserver starts again on the same etcd, port and certificates")
		Expect(apiServer.Start()).To(Succeed())
		restarted = true

		By("changes made after it is back reach the manager: a new pod, a new Service")
		second := runPod(ctx, ns, "backend-1", backend, true)
		after := newService(ns, "after", backend)
		Eventually(func() error { return k8sClient.Create(ctx, after) }).Should(Succeed())
		start := time.Now()
		Eventually(func(g Gomega) {
			got := &corev1.Service{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(after), got)).To(Succeed())
			expectIPIn(g, got, poolCIDR) // only our webhook hands out the tenant pool's addresses
			expectPublished(g, ctx, ns, "before", podIPs(first, second), nil)
			expectPublished(g, ctx, ns, "after", podIPs(first, second), nil)
			got2 := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got2)).To(Succeed())
			holders := holdersIn(g, ctx, poolCIDR) // the namespace's, and other specs' from the default pool
			g.Expect(got2.Status.Allocated).To(BeEquivalentTo(len(holders)), "pool %s counts the Services holding its addresses; status %+v; Services %v",
				pool.Name, got2.Status, holders)
			expectClusterIPsConsistent(g, ctx)
		}).Should(Succeed())
		AddReportEntry("converged after the API server restart", time.Since(start).Round(time.Millisecond).String())
		Eventually(func(g Gomega) { expectManagerHealthy(g, pid) }).Should(Succeed())
		if datapath {
			Expect(get(web)).To(Succeed(), "traffic to the ClusterIP after the API server is back")
		}
	})
})

// apiServerStopTimeout bounds a graceful stop of the control plane's processes.
const apiServerStopTimeout = 10 * time.Second

// stopAPIServer stops kube-apiserver: SIGTERM, then SIGKILL after apiServerStopTimeout. Either
// way it no longer serves; its etcd, certificates and port stay for the next Start.
func stopAPIServer(apiServer *envtest.APIServer) {
	if err := apiServer.Stop(); err != nil {
		Expect(err.Error()).To(ContainSubstring("timeout waiting for process kube-apiserver to stop"))
		fmt.Fprintf(GinkgoWriter, "kube-apiserver did not exit within %s of SIGTERM; envtest sent SIGKILL\n", apiServerStopTimeout)
	}
}

// serveLocalPod serves HTTP on localPodIP:8080 for the spec's duration, and creates a Service
// "web" in ns over a ready pod with that IP.
func serveLocalPod(ctx context.Context, ns string) *corev1.Service {
	serveWeb(localPodIP)
	labels := map[string]string{"app": "web"}
	web := newService(ns, "web", labels)
	Expect(k8sClient.Create(ctx, web)).To(Succeed())
	runPodWithIP(ctx, ns, "web-0", localPodIP, labels, true)
	return web
}

// get sends one HTTP request to the Service's ClusterIP, port 80, and checks the answer.
func get(svc *corev1.Service) error {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(svc.Spec.ClusterIP, "80") + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if string(body) != "web" {
		return fmt.Errorf("answer %q, want \"web\"", body)
	}
	return nil
}
