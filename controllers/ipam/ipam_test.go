package ipam

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// createdIP creates svc and returns the ClusterIP it got.
func createdIP(ctx context.Context, svc *corev1.Service) netip.Addr {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, svc)).To(Succeed())
	return netip.MustParseAddr(svc.Spec.ClusterIP)
}

// holderOf is the Service the running manager's registry says holds ip ("" when none).
func holderOf(ip netip.Addr) string {
	key, ok := running.registry.HolderOf(ip)
	if !ok {
		return ""
	}
	return key.String()
}

func keyOf(svc *corev1.Service) string { return client.ObjectKeyFromObject(svc).String() }

var _ = Describe("ClusterIP assignment from ClusterIPPools", func() {
	It("creates the default pool for the Service range and adopts the kubernetes Service into it", func(ctx SpecContext) {
		pool := &ipamv1alpha1.ClusterIPPool{}
		Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ipamv1alpha1.DefaultPoolName}, pool)).To(Succeed())
		Expect(pool.Spec.CIDRs).To(Equal([]string{"10.96.0.0/12"}))
		Expect(pool.Spec.NamespaceSelector).To(BeNil())
		Eventually(func() string { return holderOf(netip.MustParseAddr("10.96.0.1")) }).Should(Equal("default/kubernetes"))
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), pool)).To(Succeed())
			g.Expect(pool.Status.Allocated).To(BeNumerically(">=", 1))
			g.Expect(pool.Status.Families).To(ContainElement(And(
				HaveField("Family", corev1.IPv4Protocol), HaveField("CIDR", "10.96.0.0/12"))))
		}).Should(Succeed())
	})

	It("gives Services of a labelled namespace addresses of the team's pool, and others the default pool's", func(ctx SpecContext) {
		team := uniqueName("team")
		teamPool := createPool([]string{"10.96.16.0/20"}, map[string]string{"team": team})
		teamNet := netip.MustParsePrefix("10.96.16.0/20")
		teamNS, otherNS := newNamespace(map[string]string{"team": team}), newNamespace(nil)

		for range 5 {
			ip := createdIP(ctx, newService(teamNS, uniqueName("svc")))
			Expect(teamNet.Contains(ip)).To(BeTrue(), "%s is outside pool %s (%s)", ip, teamPool.Name, teamNet)
		}
		generated := newService(teamNS, "")
		generated.GenerateName = "web-"
		Expect(teamNet.Contains(createdIP(ctx, generated))).To(BeTrue(), "a Service with generateName lands in the pool too")

		err := k8sClient.Create(ctx, newService(otherNS, "asks-team-ip", withClusterIP("10.96.16.100")))
		Expect(err).To(MatchError(And(ContainSubstring("provided IP is not in the valid range"),
			ContainSubstring("10.96.16.100 belongs to pool "+teamPool.Name+", which does not select namespace "+otherNS),
			ContainSubstring("it may use default (10.96.0.0/12)"))))

		other := newService(otherNS, "elsewhere")
		ip := createdIP(ctx, other)
		Expect(netip.MustParsePrefix("10.96.0.0/12").Contains(ip)).To(BeTrue())
		Expect(teamNet.Contains(ip)).To(BeFalse(), "the default pool handed out %s of pool %s", ip, teamPool.Name)
		Eventually(func() string { return holderOf(ip) }).Should(Equal(keyOf(other)))

		Eventually(func(g Gomega) {
			held := servicesWithin(ctx, g, teamNet) // earlier tests' default-pool Services may sit in it
			g.Expect(held).To(BeNumerically(">=", 6))
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(teamPool), got)).To(Succeed())
			g.Expect(got.Status.Allocated).To(BeEquivalentTo(held))
			g.Expect(got.Status.Free).To(Equal(strconv.Itoa(4094 - held)))
		}).Should(Succeed())
	})

	It("honours a requested free IP and denies a held one, naming the holder", func(ctx SpecContext) {
		ns := newNamespace(nil)
		first := newService(ns, "first", withClusterIP("10.96.200.7"))
		Expect(createdIP(ctx, first)).To(Equal(netip.MustParseAddr("10.96.200.7")))
		Eventually(func() string { return holderOf(netip.MustParseAddr("10.96.200.7")) }).Should(Equal(keyOf(first)))

		err := k8sClient.Create(ctx, newService(ns, "second", withClusterIP("10.96.200.7")))
		Expect(err).To(MatchError(And(
			ContainSubstring("provided IP is already allocated"),
			ContainSubstring("10.96.200.7 in pool default is held by Service "+keyOf(first)))))
	})

	It("frees the IP reserved for a Service the API server then refused", func(ctx SpecContext) {
		ns := newNamespace(nil)
		createdIP(ctx, newService(ns, "taken"))
		// Admission reserves 10.96.201.9 for ns/taken; the create then fails with AlreadyExists.
		err := k8sClient.Create(ctx, newService(ns, "taken", withClusterIP("10.96.201.9")))
		Expect(err).To(MatchError(ContainSubstring("already exists")))
		Eventually(func(g Gomega) {
			again := newService(ns, uniqueName("svc"), withClusterIP("10.96.201.9"))
			g.Expect(k8sClient.Create(ctx, again)).To(Succeed())
		}).Should(Succeed())
	})

	It("shows a dry run an address of the pool, and reserves nothing", func(ctx SpecContext) {
		team := uniqueName("team")
		pool := createPool([]string{"10.96.56.0/29"}, map[string]string{"team": team})
		ns := newNamespace(map[string]string{"team": team})
		for range 3 {
			dry := newService(ns, "dry")
			Expect(k8sClient.Create(ctx, dry, client.DryRunAll)).To(Succeed())
			Expect(netip.MustParsePrefix("10.96.56.0/29").Contains(netip.MustParseAddr(dry.Spec.ClusterIP))).To(BeTrue())
		}
		Consistently(func(g Gomega) {
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
			g.Expect(got.Status.Allocated).To(BeZero())
		}, "1s").Should(Succeed())
	})

	It("never hands out a reserved IP, and denies asking for one", func(ctx SpecContext) {
		team := uniqueName("team")
		reserved := []string{"10.96.48.1", "10.96.48.2", "10.96.48.3", "10.96.48.4", "10.96.48.5", "10.96.48.6",
			"10.96.48.7", "10.96.48.8", "10.96.48.9", "10.96.48.10"}
		pool := createPool([]string{"10.96.48.0/28"}, map[string]string{"team": team}, reserved...)
		ns := newNamespace(map[string]string{"team": team})
		var got []string
		for range 4 { // 14 assignable addresses, 10 reserved
			got = append(got, createdIP(ctx, newService(ns, uniqueName("svc"))).String())
		}
		Expect(got).To(ConsistOf("10.96.48.11", "10.96.48.12", "10.96.48.13", "10.96.48.14"))
		err := k8sClient.Create(ctx, newService(ns, "asks-reserved", withClusterIP("10.96.48.5")))
		Expect(err).To(MatchError(And(ContainSubstring("provided IP is reserved"), ContainSubstring("pool "+pool.Name))))
	})

	It("denies a Service in a full pool, says how to grow it, and marks the pool Exhausted", func(ctx SpecContext) {
		team := uniqueName("team")
		pool := createPool([]string{"10.96.32.0/29"}, map[string]string{"team": team})
		ns := newNamespace(map[string]string{"team": team})
		var err error
		created := 0
		for ; created <= 6 && err == nil; created++ { // 6 addresses, some maybe held by earlier tests
			err = k8sClient.Create(ctx, newService(ns, uniqueName("svc")))
		}
		Expect(err).To(MatchError(And(ContainSubstring("range is full"), ContainSubstring("pool "+pool.Name),
			ContainSubstring("spec.cidrs"), ContainSubstring("delete Services"))))
		Eventually(func(g Gomega) {
			got := &ipamv1alpha1.ClusterIPPool{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pool), got)).To(Succeed())
			g.Expect(got.Status.Conditions).To(ContainElement(And(
				HaveField("Type", ipamv1alpha1.ConditionExhausted), HaveField("Status", metav1.ConditionTrue),
				HaveField("ObservedGeneration", got.Generation))))
			g.Expect(got.Status.Allocated).To(BeEquivalentTo(6))
			g.Expect(got.Status.Free).To(Equal("0"))
			g.Expect(created).To(BeNumerically("<=", 7))
		}).Should(Succeed())
	})

	It("gives 500 Services created concurrently 500 distinct IPs", func(ctx SpecContext) {
		ns := newNamespace(nil)
		const workers, perWorker = 20, 25
		var (
			mu   sync.Mutex
			seen = map[string]string{}
			errs []error
			wg   sync.WaitGroup
		)
		for w := range workers {
			wg.Go(func() {
				defer GinkgoRecover()
				for i := range perWorker {
					svc := newService(ns, "svc-"+suffix(w)+"-"+suffix(i))
					err := k8sClient.Create(ctx, svc)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						seen[svc.Spec.ClusterIP] = svc.Name
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		Expect(errs).To(BeEmpty())
		Expect(seen).To(HaveLen(workers * perWorker))
		for ip, name := range seen {
			Eventually(func() string { return holderOf(netip.MustParseAddr(ip)) }).Should(Equal(ns + "/" + name))
		}
	}, SpecTimeout(5*time.Minute))

	It("rejects a pool with a malformed CIDR, two CIDRs of one family, host bits or no room at the API server", func(ctx SpecContext) {
		malformed := &ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("bad")},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.96.0.0/33"}}}
		Expect(k8sClient.Create(ctx, malformed)).To(MatchError(ContainSubstring("must be a CIDR such as 10.96.0.0/12")))
		twoV4 := &ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("bad")},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.96.0.0/16", "10.97.0.0/16"}}}
		Expect(k8sClient.Create(ctx, twoV4)).To(MatchError(ContainSubstring("cidrs may hold at most one CIDR per IP family")))
		hostBits := &ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("bad")},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.96.0.5/24"}}}
		Expect(k8sClient.Create(ctx, hostBits)).To(MatchError(ContainSubstring("must be the network address")))
		tooWide := &ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("bad")},
			Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"fd00::/48"}}}
		Expect(k8sClient.Create(ctx, tooWide)).To(MatchError(ContainSubstring("an IPv6 CIDR from /64 to /127")))
	})
})

var _ = Describe("ClusterIP assignment across a restart of the manager", Serial, func() {
	It("rebuilds the same bitmaps and hands out no IP twice afterwards", func(ctx SpecContext) {
		team := uniqueName("team")
		createPool([]string{"10.96.64.0/24"}, map[string]string{"team": team})
		teamNS, otherNS := newNamespace(map[string]string{"team": team}), newNamespace(nil)
		for i := range 10 {
			createdIP(ctx, newService(teamNS, "team-"+suffix(i)))
			createdIP(ctx, newService(otherNS, "other-"+suffix(i)))
		}
		waitInSync(ctx)
		before, err := running.registry.Snapshots()
		Expect(err).NotTo(HaveOccurred())

		restartManager(nil)
		Expect(running.registry.Snapshots()).To(Equal(before))

		for i := range 10 {
			createdIP(ctx, newService(teamNS, "after-"+suffix(i)))
			createdIP(ctx, newService(otherNS, "after-"+suffix(i)))
		}
		services := &corev1.ServiceList{}
		Expect(k8sClient.List(ctx, services)).To(Succeed())
		holders := map[string]string{}
		for _, svc := range services.Items {
			for _, ip := range svc.Spec.ClusterIPs {
				if ip == corev1.ClusterIPNone {
					continue
				}
				Expect(holders).NotTo(HaveKey(ip), "%s is held by %s and %s/%s", ip, holders[ip], svc.Namespace, svc.Name)
				holders[ip] = svc.Namespace + "/" + svc.Name
			}
		}
	})

	It("frees the IP of a Service deleted while it was stopped, and adopts one created meanwhile", func(ctx SpecContext) {
		ns := newNamespace(nil)
		gone := newService(ns, "deleted-while-down")
		goneIP := createdIP(ctx, gone)
		Eventually(func() string { return holderOf(goneIP) }).Should(Equal(keyOf(gone)))

		meanwhile := newService(ns, "created-while-down")
		restartManager(func() {
			Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
			// The webhook is unreachable: failurePolicy Ignore lets the API server assign the IP.
			Expect(k8sClient.Create(ctx, meanwhile)).To(Succeed())
		})
		meanwhileIP := netip.MustParseAddr(meanwhile.Spec.ClusterIP)
		Expect(holderOf(goneIP)).To(BeEmpty())
		Eventually(func() string { return holderOf(meanwhileIP) }).Should(Equal(keyOf(meanwhile)))

		again := newService(ns, "reuses-the-freed-ip", withClusterIP(goneIP.String()))
		Expect(createdIP(ctx, again)).To(Equal(goneIP))
	})
})

// servicesWithin counts the ClusterIPs of all Services that lie in prefix.
func servicesWithin(ctx context.Context, g Gomega, prefix netip.Prefix) int {
	services := &corev1.ServiceList{}
	g.Expect(k8sClient.List(ctx, services)).To(Succeed())
	n := 0
	for _, svc := range services.Items {
		for _, s := range svc.Spec.ClusterIPs {
			if ip, err := netip.ParseAddr(s); err == nil && prefix.Contains(ip) {
				n++
			}
		}
	}
	return n
}

// setDefaultPoolCIDRs changes the CIDRs of the pool "default".
func setDefaultPoolCIDRs(ctx context.Context, cidrs ...string) {
	GinkgoHelper()
	pool := &ipamv1alpha1.ClusterIPPool{}
	Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ipamv1alpha1.DefaultPoolName}, pool)).To(Succeed())
	patch := client.MergeFrom(pool.DeepCopy())
	pool.Spec.CIDRs = cidrs
	Expect(k8sClient.Patch(ctx, pool, patch)).To(Succeed())
}

// defaultPoolCondition returns the condition t of the pool "default".
func defaultPoolCondition(ctx context.Context, g Gomega, t string) *metav1.Condition {
	pool := &ipamv1alpha1.ClusterIPPool{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Name: ipamv1alpha1.DefaultPoolName}, pool)).To(Succeed())
	g.Expect(pool.Status.ObservedGeneration).To(Equal(pool.Generation))
	c := meta.FindStatusCondition(pool.Status.Conditions, t)
	g.Expect(c).NotTo(BeNil())
	return c
}

var _ = Describe("ClusterIPs outside every pool", Serial, func() {
	It("are reported as a Warning Event on the Service, a pool condition and a metric", func(ctx SpecContext) {
		ns := newNamespace(nil)
		stray := newService(ns, "stray", withClusterIP("10.111.0.5"))
		DeferCleanup(func(ctx context.Context) {
			setDefaultPoolCIDRs(ctx, "10.96.0.0/12")
			Eventually(func(g Gomega) {
				g.Expect(defaultPoolCondition(ctx, g, ipamv1alpha1.ConditionConflicting).Status).To(Equal(metav1.ConditionFalse))
			}).Should(Succeed())
		})
		before := metricValue("clusterip_allocation_errors_total", map[string]string{"pool": "default", "reason": ReasonOutOfRange})
		restartManager(func() {
			// While the webhook is down the default pool shrinks to 10.96.0.0/13 and the API server
			// hands out 10.111.0.5, in its range but in no pool.
			setDefaultPoolCIDRs(ctx, "10.96.0.0/13")
			Expect(k8sClient.Create(ctx, stray)).To(Succeed())
		})
		Eventually(func(g Gomega) {
			events := &eventsv1.EventList{}
			g.Expect(k8sClient.List(ctx, events, client.InNamespace(ns))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(
				HaveField("Regarding.Name", stray.Name), HaveField("Type", corev1.EventTypeWarning),
				HaveField("Reason", ReasonOutOfRange), HaveField("Note", ContainSubstring("10.111.0.5 is outside every ClusterIPPool")))))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			c := defaultPoolCondition(ctx, g, ipamv1alpha1.ConditionConflicting)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(ReasonOutOfRange))
			g.Expect(c.Message).To(ContainSubstring("outside every pool"))
			g.Expect(metricValue("clusterip_pool_conflicting_addresses", map[string]string{"pool": "default", "reason": ReasonOutOfRange})).To(BeNumerically(">=", 1))
		}).Should(Succeed())
		Expect(metricValue("clusterip_allocation_errors_total", map[string]string{"pool": "default", "reason": ReasonOutOfRange})).To(BeNumerically(">", before))
	})
})

// waitInSync waits until the running registry has the cluster's pools (earlier tests delete
// theirs) and no reservation waits for its Service.
func waitInSync(ctx context.Context) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		pools := &ipamv1alpha1.ClusterIPPoolList{}
		g.Expect(k8sClient.List(ctx, pools)).To(Succeed())
		var names []string
		for _, p := range pools.Items {
			names = append(names, p.Name)
		}
		g.Expect(running.registry.PoolNames()).To(ConsistOf(names))
		g.Expect(running.registry.Pending()).To(BeZero())
	}).Should(Succeed())
}

// suffix turns i into a short name suffix: 0 → "aa", 27 → "bb".
func suffix(i int) string { return string(rune('a'+i/26)) + string(rune('a'+i%26)) }

// metricValue is the value of a counter or gauge series, or the sample count of a histogram,
// summed over the series of name whose labels include labels.
func metricValue(name string, labels map[string]string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

var _ = Describe("ClusterIP assignment metrics", func() {
	It("exports pool gauges, denials by reason and webhook latency in the manager's registry", func(ctx SpecContext) {
		ns := newNamespace(nil)
		createdIP(ctx, newService(ns, "counted"))
		Expect(k8sClient.Create(ctx, newService(ns, "out-of-range", withClusterIP("10.200.0.1")))).NotTo(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(metricValue("clusterip_pool_allocated_addresses", map[string]string{"pool": "default", "family": "IPv4"})).To(BeNumerically(">=", 2))
			g.Expect(metricValue("clusterip_pool_free_addresses", map[string]string{"pool": "default", "family": "IPv4"})).To(BeNumerically(">", 1e6))
		}).Should(Succeed())
		Expect(metricValue("clusterip_allocation_errors_total", map[string]string{"reason": ReasonOutOfRange})).To(BeNumerically(">=", 1))
		Expect(metricValue("clusterip_webhook_duration_seconds", map[string]string{"webhook": "mutate", "allowed": "true"})).To(BeNumerically(">=", 1))
		Expect(metricValue("clusterip_webhook_duration_seconds", map[string]string{"webhook": "validate"})).To(BeNumerically(">=", 1))
	})
})
