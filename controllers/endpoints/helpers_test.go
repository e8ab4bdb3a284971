package endpoints

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Helpers for envtest specs. They act as a user (create Services, Pods, Endpoints) and as a
// kubelet (patch pod status), and read back through the direct client.

var nextPodIP atomic.Int64

// eachSpecInANewNamespace points ns to a namespace of each spec's own.
func eachSpecInANewNamespace(ns *string) {
	BeforeEach(func(ctx SpecContext) { *ns = testenv.NewNamespace(ctx, k8sClient, "endpoints", nil) })
}

type servicePortSpec struct {
	name       string
	port       int32
	targetPort intstr.IntOrString
}

func createService(ctx context.Context, c client.Client, ns, name string, selector map[string]string, ports ...servicePortSpec) *corev1.Service {
	svc := kit.MakeService(name, ns).Selector(selector)
	for _, p := range ports {
		svc.Port(corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: p.targetPort, Protocol: corev1.ProtocolTCP})
	}
	created := svc.Obj()
	Expect(c.Create(ctx, created)).To(Succeed())
	return created
}

// createPod creates a pod on node, as a Deployment's replica would be once scheduled.
func createPod(ctx context.Context, c client.Client, ns, name, node string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	pod := kit.MakePod(name, ns).Labels(labels).Node(node).ContainerPorts(ports...).Obj()
	Expect(c.Create(ctx, pod)).To(Succeed())
	return pod
}

func uniquePodIP() string {
	n := nextPodIP.Add(1)
	return fmt.Sprintf("10.244.%d.%d", n/250, n%250+1)
}

// runPods creates n pods named prefix-i spread over both nodes and marks them running and ready.
func runPods(ctx context.Context, c client.Client, ns, prefix string, n int, labels map[string]string, ports ...corev1.ContainerPort) []*corev1.Pod {
	pods := make([]*corev1.Pod, 0, n)
	for i := range n {
		node := []string{"node-a", "node-b"}[i%2]
		p := createPod(ctx, c, ns, fmt.Sprintf("%s-%d", prefix, i), node, labels, ports...)
		testenv.SetPodStatus(ctx, c, p, uniquePodIP(), true)
		pods = append(pods, p)
	}
	return pods
}

func getEndpoints(g Gomega, ctx context.Context, c client.Client, ns, name string) *corev1.Endpoints {
	ep := &corev1.Endpoints{}
	g.Expect(c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ep)).To(Succeed())
	return ep
}

func getSlices(g Gomega, ctx context.Context, c client.Client, ns, service, managedBy string) []discoveryv1.EndpointSlice {
	var list discoveryv1.EndpointSliceList
	g.Expect(c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{
		discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: managedBy,
	})).To(Succeed())
	return list.Items
}

// readyIPs lists the ready addresses of an Endpoints that has exactly one subset.
func readyIPs(g Gomega, ep *corev1.Endpoints) []string {
	g.Expect(ep.Subsets).To(HaveLen(1))
	return addressIPs(ep.Subsets[0].Addresses)
}

// notReadyIPs lists the not-ready addresses of an Endpoints that has exactly one subset.
func notReadyIPs(g Gomega, ep *corev1.Endpoints) []string {
	g.Expect(ep.Subsets).To(HaveLen(1))
	return addressIPs(ep.Subsets[0].NotReadyAddresses)
}

// addressIPs lists the IPs of Endpoints addresses, sorted.
func addressIPs(addrs []corev1.EndpointAddress) []string {
	out := []string{}
	for _, a := range addrs {
		out = append(out, a.IP)
	}
	sort.Strings(out)
	return out
}

// sliceEndpointsByIP indexes all endpoints of the slices by their first address.
func sliceEndpointsByIP(slices []discoveryv1.EndpointSlice) map[string]discoveryv1.Endpoint {
	out := map[string]discoveryv1.Endpoint{}
	for _, s := range slices {
		for _, e := range s.Endpoints {
			out[e.Addresses[0]] = e
		}
	}
	return out
}

func podIPsOf(pods []*corev1.Pod) []string {
	out := []string{}
	for _, p := range pods {
		out = append(out, p.Status.PodIP)
	}
	sort.Strings(out)
	return out
}

func tcpPort(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}
