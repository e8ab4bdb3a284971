package testenv

import (
	"context"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// NewNamespace creates a namespace of the spec's own, named prefix-<random suffix>, with labels.
func NewNamespace(ctx context.Context, c client.Client, prefix string, labels map[string]string) string {
	ginkgo.GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels}}
	gomega.Expect(c.Create(ctx, ns)).To(gomega.Succeed())
	return ns.Name
}

// SetPodStatus is the kubelet stand-in of the suites (no kubelet runs under envtest): it writes
// the status a kubelet writes once the pod runs (phase Running, the IP, the Ready condition) and
// copies it into pod.
func SetPodStatus(ctx context.Context, c client.Client, pod *corev1.Pod, ip string, ready bool) {
	ginkgo.GinkgoHelper()
	gomega.Eventually(func(g gomega.Gomega) {
		current := &corev1.Pod{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(pod), current)).To(gomega.Succeed())
		current.Status.Phase = corev1.PodRunning
		current.Status.PodIP = ip
		current.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		condition := kit.ReadyCondition(ready)
		condition.LastTransitionTime = metav1.Now()
		current.Status.Conditions = []corev1.PodCondition{condition}
		g.Expect(c.Status().Update(ctx, current)).To(gomega.Succeed())
		pod.Status = current.Status
	}).Should(gomega.Succeed())
}
