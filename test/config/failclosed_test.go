package config_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

var _ = Describe("the fail-closed install (config/webhook-fail-closed)", Ordered, func() {
	var base, failClosed []*unstructured.Unstructured
	BeforeAll(func() {
		base = decodeObjects(kustomizeBuild("config/default"))
		failClosed = decodeObjects(kustomizeBuild("config/webhook-fail-closed"))
	})

	It("differs from config/default only in the webhooks' failurePolicy, namespaceSelector and matchConditions", func() {
		Expect(failClosed).To(HaveLen(len(base)))
		for i, obj := range failClosed {
			want := base[i].DeepCopy()
			if kind := obj.GetKind(); kind == "MutatingWebhookConfiguration" || kind == "ValidatingWebhookConfiguration" {
				webhooks, _, _ := unstructured.NestedSlice(obj.Object, "webhooks")
				wantHooks, _, _ := unstructured.NestedSlice(want.Object, "webhooks")
				Expect(webhooks).To(HaveLen(len(wantHooks)), describe(obj))
				// The last webhook the API server calls fails closed: the validating one, and
				// the mutating retry (the first mutating call stays Ignore so that a replica
				// dying mid-call leaves the retry to a live one).
				last := len(webhooks) - 1
				for j := range webhooks {
					hook, wantHook := webhooks[j].(map[string]any), wantHooks[j].(map[string]any)
					Expect(wantHook).To(HaveKeyWithValue("failurePolicy", "Ignore"), "config/default stays fail-open")
					if j != last {
						continue
					}
					Expect(hook).To(HaveKeyWithValue("failurePolicy", "Fail"), describe(obj))
					Expect(hook).To(HaveKey("namespaceSelector"), describe(obj))
					Expect(hook).To(HaveKey("matchConditions"), describe(obj))
					wantHook["failurePolicy"] = "Fail"
					wantHook["namespaceSelector"] = hook["namespaceSelector"]
					wantHook["matchConditions"] = hook["matchConditions"]
				}
				Expect(unstructured.SetNestedSlice(want.Object, wantHooks, "webhooks")).To(Succeed())
			}
			Expect(obj.Object).To(Equal(want.Object), describe(obj))
		}
	})

	It("refuses Service creates while no webhook answers, except in kube-system and for the kubernetes Service", func(ctx context.Context) {
		// The configurations, for real, pointing at a webhook Service that has no endpoints.
		for _, obj := range failClosed {
			kind := obj.GetKind()
			if kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration" {
				continue
			}
			config := obj.DeepCopy()
			Expect(k8sClient.Create(ctx, config)).To(Succeed(), describe(obj))
			DeferCleanup(func(ctx context.Context) {
				Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, config))).To(Succeed())
			})
		}
		Eventually(func(g Gomega) {
			var hooks admissionregistrationv1.MutatingWebhookConfigurationList
			g.Expect(k8sClient.List(ctx, &hooks)).To(Succeed())
			g.Expect(hooks.Items).NotTo(BeEmpty())
		}).Should(Succeed())

		tenant := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-"}}
		Expect(k8sClient.Create(ctx, tenant)).To(Succeed())
		Eventually(func() error {
			return k8sClient.Create(ctx, service(tenant.Name, "web"), client.DryRunAll)
		}).Should(MatchError(ContainSubstring("failed calling webhook")), "a tenant's Service while the webhook is down")

		Expect(k8sClient.Create(ctx, service("kube-system", "dns-"+tenant.Name))).To(Succeed(), "kube-system is exempt")
		kubernetes := &corev1.Service{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "kubernetes"}, kubernetes)).To(Succeed())
		kubernetes.Labels = map[string]string{"config-test": "touched"}
		Expect(k8sClient.Update(ctx, kubernetes)).To(Succeed(), "the API server's own Service is exempt")
		other := service("default", "not-kubernetes")
		Expect(k8sClient.Create(ctx, other, client.DryRunAll)).To(MatchError(ContainSubstring("failed calling webhook")),
			"only the Service named kubernetes is exempt in namespace default")
	})
})

func service(ns, name string) *corev1.Service {
	return kit.MakeService(name, ns).Port(corev1.ServicePort{Port: 80}).Obj()
}
