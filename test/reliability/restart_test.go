package reliability

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Burst shape: burstCreates Services are created and burstDeletes of them deleted again, by
// burstWorkers clients at once, 500 writes in all.
const (
	burstCreates = 300
	burstDeletes = 200
	burstWorkers = 8
	// The manager is killed after killAfter writes and started again after restartAfter.
	killAfter    = 150
	restartAfter = 300
)

var _ = Describe("the manager killed (SIGKILL) and restarted during a burst of 500 Service creates and deletes", func() {
	It("leaves every Service a unique ClusterIP, pool counts equal to their Services, no leaked IP and no stale endpoints", func(ctx SpecContext) {
		ensureNode(ctx)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)

		By("four Services, each with three ready pods, published before the burst")
		backends := map[string][]*corev1.Pod{}
		for i := range 4 {
			name := fmt.Sprintf("web-%d", i)
			labels := map[string]string{"app": name}
			Expect(k8sClient.Create(ctx, newService(ns, name, labels))).To(Succeed())
			for j := range 3 {
				backends[name] = append(backends[name], runPod(ctx, ns, fmt.Sprintf("%s-%d", name, j), labels, true))
			}
		}
		Eventually(func(g Gomega) {
			for name, pods := range backends {
				expectPublished(g, ctx, ns, name, podIPs(pods...), nil)
			}
		}).Should(Succeed())

		By("a burst of 500 writes; every other burst Service selects web-0's pods")
		var writes atomic.Int64
		restarted := make(chan struct{})
		burstDone := make(chan struct{})
		var errs []error
		var mu sync.Mutex
		go func() {
			defer GinkgoRecover()
			defer close(burstDone)
			var wg sync.WaitGroup
			for w := range burstWorkers {
				wg.Go(func() {
					for i := w; i < burstCreates; i += burstWorkers {
						if writes.Load() >= restartAfter {
							<-restarted // the rest of the burst meets a manager that is starting
						}
						err := burstWrite(ctx, ns, i, &writes)
						if err != nil {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
					}
				})
			}
			wg.Wait()
		}()

		Eventually(writes.Load).Should(BeNumerically(">=", killAfter))
		By(fmt.Sprintf("SIGKILL of the manager after %d writes", writes.Load()))
		manager.kill()

		By("while it is down: a pod of web-1 turns not ready, one of web-2 is gone, web-3 gets a fourth pod")
		testenv.SetPodStatus(ctx, k8sClient, backends["web-1"][0], backends["web-1"][0].Status.PodIP, false)
		// Grace period 0: as a kubelet confirms the end of its containers (envtest has none).
		Expect(k8sClient.Delete(ctx, backends["web-2"][1], client.GracePeriodSeconds(0))).To(Succeed())
		backends["web-3"] = append(backends["web-3"], runPod(ctx, ns, "web-3-3", map[string]string{"app": "web-3"}, true))

		Eventually(writes.Load).Should(BeNumerically(">=", restartAfter))
		By(fmt.Sprintf("start of a new manager after %d writes; the rest of the burst goes on meanwhile", writes.Load()))
		manager.launch()
		close(restarted)
		manager.waitReady()
		Eventually(burstDone).WithTimeout(3 * time.Minute).Should(BeClosed())
		Expect(errs).To(BeEmpty(), "writes of the burst")
		Expect(writes.Load()).To(BeEquivalentTo(burstCreates + burstDeletes))

		By("afterwards: unique ClusterIPs, pool counts equal to their Services (no leak), endpoints match the pods")
		start := time.Now()
		Eventually(func(g Gomega) {
			expectClusterIPsConsistent(g, ctx)
			services := servicesIn(g, ctx, ns)
			g.Expect(services).To(HaveLen(4 + burstCreates - burstDeletes))
			for _, svc := range services {
				g.Expect(clusterIPsOf(svc)).NotTo(BeEmpty(), "Service %s has no ClusterIP", svc.Name)
			}
			web0 := podIPs(backends["web-0"]...)
			expectPublished(g, ctx, ns, "web-0", web0, nil)
			expectPublished(g, ctx, ns, "web-1", podIPs(backends["web-1"][1:]...), podIPs(backends["web-1"][0]))
			expectPublished(g, ctx, ns, "web-2", podIPs(backends["web-2"][0], backends["web-2"][2]), nil)
			expectPublished(g, ctx, ns, "web-3", podIPs(backends["web-3"]...), nil)
			for i := 0; i < burstCreates; i += 2 {
				if !burstDeleted(i) {
					expectPublished(g, ctx, ns, burstName(i), web0, nil)
				}
			}
			expectNoStaleEndpoints(g, ctx, ns)
		}).Should(Succeed())
		AddReportEntry("converged after the restart", time.Since(start).Round(time.Millisecond).String())
	})
})

func burstName(i int) string { return fmt.Sprintf("burst-%d", i) }

// burstDeleted says whether burst Service i is deleted again in the burst: two of every three
// (burstDeletes of burstCreates).
func burstDeleted(i int) bool { return i%3 != 2 }

// burstWrite creates burst Service i (selecting web-0's pods when i is even) and, for two of
// every three, deletes it again; it counts each write.
func burstWrite(ctx context.Context, ns string, i int, writes *atomic.Int64) error {
	var selector map[string]string
	if i%2 == 0 {
		selector = map[string]string{"app": "web-0"}
	}
	svc := newService(ns, burstName(i), selector)
	if err := k8sClient.Create(ctx, svc); err != nil {
		return fmt.Errorf("create %s: %w", svc.Name, err)
	}
	writes.Add(1)
	if !burstDeleted(i) {
		return nil
	}
	if err := k8sClient.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete %s: %w", svc.Name, err)
	}
	writes.Add(1)
	return nil
}
