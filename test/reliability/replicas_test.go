package reliability

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/ipam"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Shape of the replicas scenario: replicaCreates Services by replicaClients clients, spread over
// the default pool, a roomy tenant pool and a nearly full one; one replica is SIGKILLed after
// killAt creates and started again after restartAt; the rolling replacement of all three
// starts after rollAt.
const (
	replicaCount   = 3
	replicaCreates = 1000
	replicaClients = 50
	killAt         = 200
	restartAt      = 300
	rollAt         = 450
	// claimNamespace holds the replicas' claim Leases (and their leader election Lease).
	claimNamespace = "kube-system"
	roomyCIDR      = "10.109.0.0/22"
	// nearlyFullCIDR has 62 addresses; the scenario leaves nearlyFullSpare of them free.
	nearlyFullCIDR  = "10.109.8.0/26"
	nearlyFullSpare = 2
)

var _ = Describe("three manager replicas behind a round-robin front for the webhook port", func() {
	It("give 1000 concurrent creates unique addresses inside their pools, with a replica SIGKILLed and all three replaced one by one", func(ctx SpecContext) {
		By("the suite's single manager makes way for three replicas behind a TCP front on the webhook port")
		manager.kill()
		DeferCleanup(func() { manager.start() })
		front, err := testenv.NewRoundRobinFront(manager.webhookPort)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(front.Close)
		replicas := make([]*managerProcess, replicaCount)
		for i := range replicas {
			replicas[i] = newReplica(i, 1)
			replicas[i].launch()
		}
		DeferCleanup(func() {
			for _, r := range replicas {
				r.kill()
			}
		})
		for _, r := range replicas {
			r.waitReady()
			front.Add(r.webhookPort)
		}

		roomyLabels := map[string]string{"reliability.clusterip.dev/scenario": "replicas-roomy"}
		fullLabels := map[string]string{"reliability.clusterip.dev/scenario": "replicas-nearly-full"}
		createPool(ctx, roomyCIDR, roomyLabels)
		nearlyFull := createPool(ctx, nearlyFullCIDR, fullLabels)
		plainNS, roomyNS, fullNS := testenv.NewNamespace(ctx, k8sClient, "reliability", nil), testenv.NewNamespace(ctx, k8sClient, "reliability", roomyLabels), testenv.NewNamespace(ctx, k8sClient, "reliability", fullLabels)

		// The nearly full pool gets as many creates as leave nearlyFullSpare addresses free
		// (other specs' Services from the default pool may hold some of its addresses).
		var free int
		Eventually(func(g Gomega) {
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(nearlyFull), got)).To(Succeed())
			var err error
			free, err = strconv.Atoi(got.Status.Free)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(int64(free) + got.Status.Allocated).To(BeEquivalentTo(62))
		}).Should(Succeed())
		fullCreates := free - nearlyFullSpare
		Expect(fullCreates).To(BeNumerically(">", 40))
		stride := replicaCreates / fullCreates
		namespaceOf := func(i int) string {
			switch {
			case i%stride == 0 && i/stride < fullCreates:
				return fullNS
			case i%2 == 0:
				return roomyNS
			default:
				return plainNS
			}
		}

		By(fmt.Sprintf("%d creates by %d clients: %d into the nearly full pool, the rest split between the roomy pool and the default one",
			replicaCreates, replicaClients, fullCreates))
		var created atomic.Int64
		var mu sync.Mutex
		var failures []error
		burstDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(burstDone)
			work := make(chan int)
			var wg sync.WaitGroup
			for range replicaClients {
				wg.Go(func() {
					for i := range work {
						svc := newService(namespaceOf(i), fmt.Sprintf("replicas-%d", i), nil)
						if err := k8sClient.Create(ctx, svc); err != nil {
							mu.Lock()
							failures = append(failures, err)
							mu.Unlock()
						}
						created.Add(1)
					}
				})
			}
			for i := range replicaCreates {
				work <- i
			}
			close(work)
			wg.Wait()
		}()

		Eventually(created.Load).Should(BeNumerically(">=", killAt))
		By(fmt.Sprintf("SIGKILL of replica 0 after %d creates", created.Load()))
		replicas[0].kill()
		Eventually(created.Load).Should(BeNumerically(">=", restartAt))
		By(fmt.Sprintf("replica 0 started again after %d creates; it gets calls once ready", created.Load()))
		// As the webhook Service's endpoints: a Pod whose container restarts rejoins them only
		// once its readiness check passes (until then the front skips it, its port refusing).
		front.Remove(replicas[0].webhookPort)
		replicas[0].start()
		front.Add(replicas[0].webhookPort)

		Eventually(created.Load).Should(BeNumerically(">=", rollAt))
		By(fmt.Sprintf("rolling replacement of the three replicas from %d creates on (maxSurge 1, maxUnavailable 0)", created.Load()))
		for i, old := range replicas {
			successor := newReplica(i, 2)
			successor.start()
			front.Add(successor.webhookPort)
			// As a terminating Pod leaves the webhook Service's endpoints, then gets SIGTERM
			// after its preStop pause: calls already routed to it still find it.
			front.Remove(old.webhookPort)
			time.Sleep(replicaPreStop) // the preStop pause of the Deployment, not a wait for the code under test
			old.stop()
			replicas[i] = successor
		}
		AddReportEntry("creates done when the rolling replacement ended", created.Load())
		Eventually(burstDone).WithTimeout(5 * time.Minute).Should(BeClosed())

		By("afterwards: every create succeeded, no address twice, tenants inside their pools, pool counts equal to the Services")
		Expect(failures).To(BeEmpty(), "refused creates, by message:\n%s", countMessages(failures))
		Eventually(func(g Gomega) {
			expectClusterIPsConsistent(g, ctx)
			for ns, cidr := range map[string]string{roomyNS: roomyCIDR, fullNS: nearlyFullCIDR} {
				for _, svc := range servicesIn(g, ctx, ns) {
					expectIPIn(g, svc, cidr)
				}
			}
			for _, svc := range servicesIn(g, ctx, plainNS) {
				ips := clusterIPsOf(svc)
				g.Expect(ips).NotTo(BeEmpty(), "Service %s/%s has no ClusterIP", svc.Namespace, svc.Name)
				for _, tenant := range []string{roomyCIDR, nearlyFullCIDR} {
					g.Expect(netip.MustParsePrefix(tenant).Contains(ips[0])).To(BeFalse(),
						"Service %s/%s of the default pool holds %s of tenant pool %s", svc.Namespace, svc.Name, ips[0], tenant)
				}
			}
			total := len(servicesIn(g, ctx, plainNS)) + len(servicesIn(g, ctx, roomyNS)) + len(servicesIn(g, ctx, fullNS))
			g.Expect(total).To(Equal(replicaCreates))
			g.Expect(servicesIn(g, ctx, fullNS)).To(HaveLen(fullCreates))
		}).Should(Succeed())

		By("and the claims are all deleted in the end: none leaks, not even the SIGKILLed replica's; " +
			"what remains is the live replicas' stashes, set aside anew every 15 s")
		Eventually(func(g Gomega) {
			var leases coordinationv1.LeaseList
			g.Expect(k8sClient.List(ctx, &leases, client.InNamespace(claimNamespace), client.HasLabels{ipam.ClaimLabel})).To(Succeed())
			for _, lease := range leases.Items {
				g.Expect(lease.Annotations).To(HaveKeyWithValue("ipam.clusterip.dev/service", ""),
					"claim %s names a Service after every create completed", lease.Name)
				g.Expect(time.Since(lease.CreationTimestamp.Time)).To(BeNumerically("<", 30*time.Second),
					"stash claim %s of %s is older than a stash entry may be: a replica that is gone left it", lease.Name, *lease.Spec.HolderIdentity)
			}
		}).WithTimeout(3 * time.Minute).Should(Succeed()) // a gone replica's claims last two claim lifetimes (2 x 30 s)
	})
})

// replicaPreStop is the preStop pause of config/manager's Deployment, shortened for the test.
const replicaPreStop = time.Second

// newReplica is replica i of a generation: its own webhook and probe ports, claims in
// claimNamespace, leader election for the control loops, no datapath.
func newReplica(i, generation int) *managerProcess {
	m := newManagerProcess(manager.binary, manager.kubeconfig, manager.certDir, freePort())
	m.name = fmt.Sprintf(" replica-%d.%d", i, generation)
	m.replica = true
	m.extraArgs = []string{
		"--clusterip-claim-namespace=" + claimNamespace,
		"--leader-elect", "--leader-election-namespace=" + claimNamespace,
	}
	return m
}

// countMessages lists distinct error messages, with addresses and Service numbers masked, and
// how often each occurred.
func countMessages(errs []error) string {
	masked := regexp.MustCompile(`\d+\.\d+\.\d+\.\d+|replicas-\d+|:\d+`)
	counts := map[string]int{}
	for _, err := range errs {
		counts[masked.ReplaceAllString(err.Error(), "#")]++
	}
	var out []string
	for msg, n := range counts {
		out = append(out, fmt.Sprintf("%4d  %s", n, msg))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
