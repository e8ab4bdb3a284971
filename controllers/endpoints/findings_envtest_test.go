package endpoints

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// warnings returns the messages of the Service's Warning Events with the given reason.
func warnings(g Gomega, ctx context.Context, svc *corev1.Service, reason string) []string {
	var list eventsv1.EventList
	g.Expect(k8sClient.List(ctx, &list, client.InNamespace(svc.Namespace))).To(Succeed())
	var messages []string
	for _, e := range list.Items {
		if e.Regarding.UID == svc.UID && e.Reason == reason && e.Type == corev1.EventTypeWarning {
			messages = append(messages, e.Note)
		}
	}
	return messages
}

var _ = Describe("Warning Events for the most common mistakes", func() {
	var (
		ctx = context.Background()
		ns  string
	)
	eachSpecInANewNamespace(&ns)

	It("names the closest near miss when the selector matches no pod, and clears it once fixed", func() {
		svc := createService(ctx, k8sClient, ns, "backend-service", map[string]string{"app": "backend"},
			servicePortSpec{port: 80, targetPort: intstr.FromInt32(8080)})
		Eventually(func(g Gomega) {
			g.Expect(warnings(g, ctx, svc, ReasonSelectorMatchesNoPod)).To(ContainElement(ContainSubstring("matches no pod")))
		}).Should(Succeed())

		// The near miss appears after the Service: the warning must learn of it.
		pods := runPods(ctx, k8sClient, ns, "backend", 1, map[string]string{"app": "backnd"})

		Eventually(func(g Gomega) {
			g.Expect(warnings(g, ctx, svc, ReasonSelectorMatchesNoPod)).To(ContainElement(
				And(ContainSubstring(pods[0].Name), ContainSubstring("app=backnd"))))
		}).Should(Succeed())

		fixed := pods[0].DeepCopy()
		fixed.Labels["app"] = "backend"
		Expect(k8sClient.Patch(ctx, fixed, client.MergeFrom(pods[0]))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(warnings(g, ctx, svc, ReasonSelectorMatchesNoPod)).To(BeEmpty())
		}).Should(Succeed())
	})

	It("reports a named targetPort no selected pod declares, and clears it once fixed", func() {
		svc := createService(ctx, k8sClient, ns, "web", map[string]string{"app": "web"},
			servicePortSpec{name: "http", port: 80, targetPort: intstr.FromString("http")})
		runPods(ctx, k8sClient, ns, "web", 2, map[string]string{"app": "web"}, tcpPort("web", 8080))

		Eventually(func(g Gomega) {
			g.Expect(warnings(g, ctx, svc, ReasonTargetPortUnresolved)).To(ContainElement(ContainSubstring("http")))
		}).Should(Succeed())

		fixed := svc.DeepCopy()
		fixed.Spec.Ports[0].TargetPort = intstr.FromString("web")
		Expect(k8sClient.Patch(ctx, fixed, client.MergeFrom(svc))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(warnings(g, ctx, svc, ReasonTargetPortUnresolved)).To(BeEmpty())
		}).Should(Succeed())
	})
})
