package reliability

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// nodeName is the node every pod of the suite is scheduled to; it exists, so pods are published.
const nodeName = "reliability-node"

var counter atomic.Int64

// uniqueName returns a name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, counter.Add(1))
}

// ensureNode creates the suite's node once.
func ensureNode(ctx context.Context) {
	node := kit.MakeNode(nodeName).Zone("zone-a").Obj()
	if err := k8sClient.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

// newService returns a ClusterIP Service with port 80 -> 8080; mutate adjusts it.
func newService(ns, name string, selector map[string]string, mutate ...func(*corev1.Service)) *corev1.Service {
	return kit.MakeService(name, ns).Selector(selector).TCPPort("http", 80, 8080).Mutate(mutate...).Obj()
}

var nextPodIP atomic.Int64

// uniquePodIP returns a pod IP in 10.244.0.0/16 that no other pod of the suite has.
func uniquePodIP() string {
	n := nextPodIP.Add(1)
	return fmt.Sprintf("10.244.%d.%d", n/250, n%250+1)
}

// runPod creates a pod on the suite's node and sets its status as a kubelet would: Running,
// its IP, and the Ready condition.
func runPod(ctx context.Context, ns, name string, labels map[string]string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	return runPodWithIP(ctx, ns, name, uniquePodIP(), labels, ready, ports...)
}

// runPodWithIP is runPod with the pod IP of the caller's choice.
func runPodWithIP(ctx context.Context, ns, name, ip string, labels map[string]string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	pod := kit.MakePod(name, ns).Labels(labels).Node(nodeName).ContainerPorts(ports...).Obj()
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	testenv.SetPodStatus(ctx, k8sClient, pod, ip, ready)
	return pod
}

// podIPs lists the pods' IPs, sorted.
func podIPs(pods ...*corev1.Pod) []string {
	out := []string{}
	for _, p := range pods {
		out = append(out, p.Status.PodIP)
	}
	sort.Strings(out)
	return out
}

// expectPublished checks that the Service's Endpoints and our EndpointSlices publish exactly
// ready as ready addresses and notReady as not-ready ones.
func expectPublished(g Gomega, ctx context.Context, ns, name string, ready, notReady []string) {
	ep := &corev1.Endpoints{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ep)).To(Succeed(), "Endpoints %s/%s", ns, name)
	var epReady, epNotReady []string
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			epReady = append(epReady, a.IP)
		}
		for _, a := range s.NotReadyAddresses {
			epNotReady = append(epNotReady, a.IP)
		}
	}
	g.Expect(sorted(epReady)).To(Equal(sorted(ready)), "ready addresses of Endpoints %s/%s", ns, name)
	g.Expect(sorted(epNotReady)).To(Equal(sorted(notReady)), "not-ready addresses of Endpoints %s/%s", ns, name)

	var sliceReady, sliceNotReady []string
	for _, s := range ourSlices(g, ctx, ns, name) {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				sliceReady = append(sliceReady, e.Addresses...)
			} else {
				sliceNotReady = append(sliceNotReady, e.Addresses...)
			}
		}
	}
	g.Expect(sorted(sliceReady)).To(Equal(sorted(ready)), "ready endpoints of the EndpointSlices of %s/%s", ns, name)
	g.Expect(sorted(sliceNotReady)).To(Equal(sorted(notReady)), "not-ready endpoints of the EndpointSlices of %s/%s", ns, name)
}

// ourSlices lists the EndpointSlices our endpoints controller keeps for a Service.
func ourSlices(g Gomega, ctx context.Context, ns, service string) []discoveryv1.EndpointSlice {
	var list discoveryv1.EndpointSliceList
	g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{
		discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: endpointrules.SliceControllerName,
	})).To(Succeed())
	return list.Items
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	sort.Strings(out)
	return out
}

// clusterIPsOf returns a Service's ClusterIPs, none for headless and ExternalName Services.
func clusterIPsOf(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, s := range svc.Spec.ClusterIPs {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// expectClusterIPsConsistent checks the allocator's promises over the whole cluster: no address
// is held by two Services, and every valid pool's status counts exactly the Services whose
// addresses it owns (the narrowest valid pool CIDR containing the address) — so no address is
// held by a bitmap without a Service (a leak) and none is held by a Service without the bitmap.
// It includes the API server's own `kubernetes` Service.
func expectClusterIPsConsistent(g Gomega, ctx context.Context) {
	var services corev1.ServiceList
	g.Expect(k8sClient.List(ctx, &services)).To(Succeed())
	var pools ipamv1alpha1.ClusterIPPoolList
	g.Expect(k8sClient.List(ctx, &pools)).To(Succeed())

	holders := map[netip.Addr]string{}
	for i := range services.Items {
		svc := &services.Items[i]
		for _, ip := range clusterIPsOf(svc) {
			key := svc.Namespace + "/" + svc.Name
			g.Expect(holders).NotTo(HaveKey(ip), "ClusterIP %s is held by %s and %s", ip, holders[ip], key)
			holders[ip] = key
		}
	}

	type cidrOf struct {
		pool   string
		prefix netip.Prefix
	}
	var cidrs []cidrOf
	for _, p := range pools.Items {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, ipamv1alpha1.ConditionReady) {
			continue
		}
		for _, c := range p.Spec.CIDRs {
			cidrs = append(cidrs, cidrOf{p.Name, netip.MustParsePrefix(c)})
		}
	}
	want := map[string]int64{} // "pool cidr" -> Services holding an address it owns
	for ip := range holders {
		owner := -1
		for i, c := range cidrs {
			if c.prefix.Contains(ip) && (owner < 0 || c.prefix.Bits() > cidrs[owner].prefix.Bits()) {
				owner = i
			}
		}
		if owner >= 0 {
			want[cidrs[owner].pool+" "+cidrs[owner].prefix.String()]++
		}
	}
	for _, p := range pools.Items {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, ipamv1alpha1.ConditionReady) {
			continue
		}
		g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation), "pool %s status is for an old spec", p.Name)
		var total int64
		for _, f := range p.Status.Families {
			g.Expect(f.Allocated).To(Equal(want[p.Name+" "+f.CIDR]),
				"pool %s %s: status.families allocated vs Services holding an address in it", p.Name, f.CIDR)
			total += f.Allocated
		}
		g.Expect(p.Status.Allocated).To(Equal(total), "pool %s: status.allocated vs the sum of its families", p.Name)
	}
}

// servicesIn lists the Services of a namespace by name.
// holdersIn returns the Services, in any namespace, holding a ClusterIP inside cidr. A tenant
// pool's CIDR lies inside the default pool's (the API server's Service range), so Services of
// other specs that drew from the default pool before may hold addresses in it: the pool counts
// them too.
func holdersIn(g Gomega, ctx context.Context, cidr string) []string {
	var list corev1.ServiceList
	g.Expect(k8sClient.List(ctx, &list)).To(Succeed())
	prefix := netip.MustParsePrefix(cidr)
	var out []string
	for i := range list.Items {
		for _, ip := range clusterIPsOf(&list.Items[i]) {
			if prefix.Contains(ip) {
				out = append(out, list.Items[i].Namespace+"/"+list.Items[i].Name)
			}
		}
	}
	return out
}

func servicesIn(g Gomega, ctx context.Context, ns string) map[string]*corev1.Service {
	var list corev1.ServiceList
	g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
	out := map[string]*corev1.Service{}
	for i := range list.Items {
		out[list.Items[i].Name] = &list.Items[i]
	}
	return out
}

// expectNoStaleEndpoints checks that every Endpoints in ns belongs to a Service that exists and
// has a selector, and that every EndpointSlice of ours is owned by such a Service (controller
// ownerReference with its UID). A slice whose owner is gone is left to the garbage collector,
// as upstream's endpointslice controller does; envtest runs none, so it is not stale here as
// long as its ownerReference names a Service UID that no longer exists.
func expectNoStaleEndpoints(g Gomega, ctx context.Context, ns string) {
	services := servicesIn(g, ctx, ns)
	var eps corev1.EndpointsList
	g.Expect(k8sClient.List(ctx, &eps, client.InNamespace(ns))).To(Succeed())
	for _, ep := range eps.Items {
		svc, ok := services[ep.Name]
		g.Expect(ok && svc.Spec.Selector != nil).To(BeTrue(), "Endpoints %s/%s has no Service with a selector", ns, ep.Name)
	}
	var list discoveryv1.EndpointSliceList
	g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns),
		client.MatchingLabels{discoveryv1.LabelManagedBy: endpointrules.SliceControllerName})).To(Succeed())
	for _, s := range list.Items {
		name := s.Labels[discoveryv1.LabelServiceName]
		owner := metav1.GetControllerOf(&s)
		g.Expect(owner).NotTo(BeNil(), "EndpointSlice %s/%s has no controller ownerReference", ns, s.Name)
		g.Expect(owner.Kind).To(Equal("Service"))
		g.Expect(owner.Name).To(Equal(name), "EndpointSlice %s/%s: owner vs %s label", ns, s.Name, discoveryv1.LabelServiceName)
		svc, ok := services[name]
		if !ok || svc.UID != owner.UID {
			continue // its owner is gone: the garbage collector's
		}
		g.Expect(svc.Spec.Selector).NotTo(BeNil(), "EndpointSlice %s/%s is for Service %q, which has no selector", ns, s.Name, name)
	}
}

// createPool creates a pool for the namespaces labelled selector and waits until it is Ready.
func createPool(ctx context.Context, cidr string, selector map[string]string) *ipamv1alpha1.ClusterIPPool {
	return createNamedPool(ctx, uniqueName("reliability-pool"), cidr, selector)
}

// createAndWaitPool creates pool, deletes it when the spec ends, and waits until it is Ready.
func createAndWaitPool(ctx context.Context, pool *ipamv1alpha1.ClusterIPPool) *ipamv1alpha1.ClusterIPPool {
	Expect(k8sClient.Create(ctx, pool)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, pool))).To(Succeed())
	})
	Eventually(func(g Gomega) {
		g.Expect(poolCondition(g, ctx, pool.Name, ipamv1alpha1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
	}).Should(Succeed())
	return pool
}

// poolCondition returns a pool's condition of type t (the zero Condition when it has none yet).
func poolCondition(g Gomega, ctx context.Context, name, t string) metav1.Condition {
	pool := &ipamv1alpha1.ClusterIPPool{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Name: name}, pool)).To(Succeed())
	g.Expect(pool.Status.ObservedGeneration).To(Equal(pool.Generation), "pool %s status is for an old spec", name)
	if c := meta.FindStatusCondition(pool.Status.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

// expectIPIn checks that a Service's ClusterIP lies in cidr.
func expectIPIn(g Gomega, svc *corev1.Service, cidr string) {
	ips := clusterIPsOf(svc)
	g.Expect(ips).NotTo(BeEmpty(), "Service %s/%s has no ClusterIP", svc.Namespace, svc.Name)
	g.Expect(netip.MustParsePrefix(cidr).Contains(ips[0])).To(BeTrue(),
		"ClusterIP %s of %s/%s is outside %s", ips[0], svc.Namespace, svc.Name, cidr)
}

// expectManagerHealthy checks that the manager process is the one given and answers its probes.
func expectManagerHealthy(g Gomega, pid int) {
	g.Expect(manager.running()).To(BeTrue(), "the manager exited")
	g.Expect(manager.pid()).To(Equal(pid), "the manager was restarted")
	g.Expect(manager.probe("/healthz")).To(Equal(200))
	g.Expect(manager.probe("/readyz")).To(Equal(200))
}
