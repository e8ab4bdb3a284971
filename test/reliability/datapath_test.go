package reliability

import (
	"fmt"
	"os/exec"
	"regexp"
	"sync"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Datapath churn: churnCreates Services over the local pod are created and two of every three
// deleted again by churnWorkers clients; the manager (with its datapath) is killed after
// churnKillAfter writes and started again after churnRestartAfter.
const (
	churnCreates      = 60
	churnWorkers      = 4
	churnKillAfter    = 30
	churnRestartAfter = 60
)

var _ = Describe("the node agent killed (SIGKILL) and restarted during Service churn", func() {
	It("serves every live Service afterwards and keeps no rule for a deleted one", func(ctx SpecContext) {
		if missing := datapathMissing(); missing != "" {
			Skip("needs " + missing)
		}
		ensureNode(ctx)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		web := serveLocalPod(ctx, ns)
		Eventually(func() error { return get(web) }).Should(Succeed())

		var writes atomic.Int64
		restarted := make(chan struct{})
		var mu sync.Mutex
		var deleted []*corev1.Service
		var errs []error
		churnDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(churnDone)
			var wg sync.WaitGroup
			for w := range churnWorkers {
				wg.Go(func() {
					for i := w; i < churnCreates; i += churnWorkers {
						if writes.Load() >= churnRestartAfter {
							<-restarted
						}
						svc := newService(ns, fmt.Sprintf("churn-%d", i), map[string]string{"app": "web"})
						err := k8sClient.Create(ctx, svc)
						writes.Add(1)
						if err == nil && i%3 != 2 {
							err = client.IgnoreNotFound(k8sClient.Delete(ctx, svc))
							writes.Add(1)
							mu.Lock()
							deleted = append(deleted, svc)
							mu.Unlock()
						}
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

		Eventually(writes.Load).Should(BeNumerically(">=", churnKillAfter))
		By(fmt.Sprintf("SIGKILL of the manager and its datapath after %d writes", writes.Load()))
		manager.kill()
		Eventually(writes.Load).Should(BeNumerically(">=", churnRestartAfter))
		By(fmt.Sprintf("start of a new one after %d writes; the churn goes on meanwhile", writes.Load()))
		manager.launch()
		close(restarted)
		manager.waitReady()
		Eventually(churnDone).Should(BeClosed())
		Expect(errs).To(BeEmpty())

		By("every live Service answers through its ClusterIP; no deleted Service's ClusterIP is in the ruleset")
		Eventually(func(g Gomega) {
			live := servicesIn(g, ctx, ns)
			g.Expect(live).To(HaveLen(1 + churnCreates/3))
			held := map[string]bool{}
			var all corev1.ServiceList
			g.Expect(k8sClient.List(ctx, &all)).To(Succeed())
			for _, svc := range all.Items {
				for _, ip := range svc.Spec.ClusterIPs {
					held[ip] = true
				}
			}
			for _, svc := range live {
				g.Expect(get(svc)).To(Succeed(), "Service %s (%s)", svc.Name, svc.Spec.ClusterIP)
			}
			ruleset, err := exec.Command("nft", "list", "table", "ip", "kube-clusterip").CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), "nft list: %s", ruleset)
			mentions := func(ip string) bool {
				return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `([^0-9.]|$)`).Match(ruleset)
			}
			for _, svc := range live {
				g.Expect(mentions(svc.Spec.ClusterIP)).To(BeTrue(), "the ruleset lacks live Service %s's ClusterIP", svc.Name)
			}
			for _, svc := range deleted {
				if held[svc.Spec.ClusterIP] {
					continue // handed to another Service since
				}
				g.Expect(mentions(svc.Spec.ClusterIP)).To(BeFalse(),
					"the ruleset still has deleted Service %s's ClusterIP %s", svc.Name, svc.Spec.ClusterIP)
			}
		}).Should(Succeed())
	})
})
