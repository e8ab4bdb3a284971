package config_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

const installNamespace = "kube-clusterip-system"

// serverSideDryRun sends each object as a server-side apply with dryRun=All: the API server
// validates and admits it fully, and stores nothing.
func serverSideDryRun(ctx context.Context, objects []*unstructured.Unstructured) {
	GinkgoHelper()
	for _, obj := range objects {
		err := k8sClient.Patch(ctx, obj.DeepCopy(), client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner("config-test"))
		Expect(err).NotTo(HaveOccurred(), "the API server refused %s", describe(obj))
	}
}

// applyForReal server-side applies the objects of the given kinds and returns them.
func applyForReal(ctx context.Context, objects []*unstructured.Unstructured, kinds ...string) {
	GinkgoHelper()
	wanted := map[string]bool{}
	for _, kind := range kinds {
		wanted[kind] = true
	}
	for _, obj := range objects {
		if wanted[obj.GetKind()] {
			Expect(k8sClient.Patch(ctx, obj.DeepCopy(), client.Apply, client.ForceOwnership, client.FieldOwner("config-test"))).
				To(Succeed(), "apply %s", describe(obj))
		}
	}
}

// One ordered container: the installer is checked against a cluster that has none of our
// objects yet, as a user's would be, before later specs install the CRD and RBAC for real.
var _ = Describe("the install manifests", Ordered, func() {
	var objects []*unstructured.Unstructured
	It("writes dist/install.yaml, which kubectl apply --dry-run=client accepts", func(ctx context.Context) {
		dist := GinkgoT().TempDir()
		build := exec.CommandContext(ctx, "make", "-C", repoRoot, "--no-print-directory", "build-installer", "DIST="+dist)
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		installer := filepath.Join(dist, "install.yaml")
		_, err = os.Stat(installer)
		Expect(err).NotTo(HaveOccurred())

		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		user, err := env.AddUser(envtestAdmin(), nil)
		Expect(err).NotTo(HaveOccurred())
		data, err := user.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(kubeconfig, data, 0o600)).To(Succeed())
		kubectl := filepath.Join(env.BinaryAssetsDirectory, "kubectl")
		apply := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "apply", "--dry-run=client", "-f", installer)
		out, err = apply.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("deployment.apps/kube-clusterip-controller-manager created (dry run)"))
		Expect(string(out)).To(ContainSubstring("daemonset.apps/kube-clusterip-datapath created (dry run)"))
	})

	BeforeAll(func() {
		Expect(ipamv1alpha1.AddToScheme(scheme.Scheme)).To(Succeed())
		objects = decodeObjects(kustomizeBuild("config/default"))
	})

	It("renders the control loops, the node agent, RBAC, the webhook and its certificate", func() {
		kinds := map[string]int{}
		for _, obj := range objects {
			kinds[obj.GetKind()]++
			if obj.GetKind() != "Namespace" && obj.GetKind() != "CustomResourceDefinition" &&
				obj.GetKind() != "ClusterRole" && obj.GetKind() != "ClusterRoleBinding" &&
				obj.GetKind() != "MutatingWebhookConfiguration" && obj.GetKind() != "ValidatingWebhookConfiguration" {
				Expect(obj.GetNamespace()).To(Equal(installNamespace), describe(obj))
			}
		}
		Expect(kinds).To(HaveKeyWithValue("Deployment", 1))
		Expect(kinds).To(HaveKeyWithValue("DaemonSet", 1))
		Expect(kinds).To(HaveKeyWithValue("MutatingWebhookConfiguration", 1))
		Expect(kinds).To(HaveKeyWithValue("ValidatingWebhookConfiguration", 1))
		Expect(kinds).To(HaveKeyWithValue("Certificate", 1))
		Expect(kinds).To(HaveKeyWithValue("Issuer", 1))
		Expect(kinds).To(HaveKeyWithValue("CustomResourceDefinition", 1))
	})

	It("is accepted by the API server, object by object (server-side dry run)", func(ctx context.Context) {
		// Namespaced objects can only be dry-run into a namespace that exists.
		applyForReal(ctx, objects, "Namespace")
		serverSideDryRun(ctx, objects)
	})

	It("runs the node agent with NET_ADMIN and NET_RAW only, not privileged, in the host network", func() {
		for _, obj := range objects {
			if obj.GetKind() != "DaemonSet" {
				continue
			}
			hostNetwork, _, _ := unstructured.NestedBool(obj.Object, "spec", "template", "spec", "hostNetwork")
			Expect(hostNetwork).To(BeTrue())
			containers, _, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "containers")
			Expect(containers).To(HaveLen(1))
			sc := containers[0].(map[string]any)["securityContext"].(map[string]any)
			Expect(sc["privileged"]).To(BeFalse())
			Expect(sc["capabilities"]).To(HaveKeyWithValue("add", ConsistOf("NET_ADMIN", "NET_RAW")))
			Expect(sc["capabilities"]).To(HaveKeyWithValue("drop", ConsistOf("ALL")))
		}
	})

	It("keeps the samples and the ServiceMonitor acceptable too", func(ctx context.Context) {
		applyForReal(ctx, objects, "CustomResourceDefinition")
		Eventually(func() error { return k8sClient.List(ctx, &ipamv1alpha1.ClusterIPPoolList{}) }).Should(Succeed())
		samples := decodeObjects(kustomizeBuild("config/samples"))
		Expect(samples).NotTo(BeEmpty())
		serverSideDryRun(ctx, samples)
		monitor := decodeObjects(kustomizeBuild("config/prometheus"))
		for _, obj := range monitor {
			obj.SetNamespace(installNamespace)
		}
		serverSideDryRun(ctx, monitor)
	})

	Describe("RBAC", Ordered, func() {
		var controllerSA, datapathSA client.Client

		impersonate := func(serviceAccount string) client.Client {
			GinkgoHelper()
			impersonated := rest.CopyConfig(cfg)
			impersonated.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + installNamespace + ":" + serviceAccount}
			c, err := client.New(impersonated, client.Options{Scheme: scheme.Scheme})
			Expect(err).NotTo(HaveOccurred())
			return c
		}

		BeforeAll(func(ctx context.Context) {
			applyForReal(ctx, objects, "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
			Eventually(func() error { return k8sClient.List(ctx, &ipamv1alpha1.ClusterIPPoolList{}) }).Should(Succeed())
			controllerSA = impersonate("kube-clusterip-controller-manager")
			datapathSA = impersonate("kube-clusterip-datapath")
		})

		It("lets the control loops read Services, Pods, Nodes and Namespaces and write Endpoints, EndpointSlices and pools", func(ctx context.Context) {
			for _, list := range []client.ObjectList{&corev1.ServiceList{}, &corev1.PodList{}, &corev1.NodeList{}, &corev1.NamespaceList{},
				&corev1.EndpointsList{}, &discoveryv1.EndpointSliceList{}, &ipamv1alpha1.ClusterIPPoolList{}} {
				Expect(controllerSA.List(ctx, list)).To(Succeed(), "list %T", list)
			}
			slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"},
				AddressType: discoveryv1.AddressTypeIPv4}
			Expect(controllerSA.Create(ctx, slice, client.DryRunAll)).To(Succeed())
			endpoints := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"}}
			Expect(controllerSA.Create(ctx, endpoints, client.DryRunAll)).To(Succeed())
			pool := &ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe"},
				Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.96.0.0/24"}}}
			Expect(controllerSA.Create(ctx, pool, client.DryRunAll)).To(Succeed())
		})

		It("forbids the control loops Secrets, ConfigMaps, and changing Pods or Services", func(ctx context.Context) {
			Expect(apierrors.IsForbidden(controllerSA.List(ctx, &corev1.SecretList{}))).To(BeTrue(), "list secrets")
			Expect(apierrors.IsForbidden(controllerSA.List(ctx, &corev1.ConfigMapList{}))).To(BeTrue(), "list configmaps")
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
			Expect(apierrors.IsForbidden(controllerSA.Create(ctx, pod, client.DryRunAll))).To(BeTrue(), "create pods")
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
			Expect(apierrors.IsForbidden(controllerSA.Create(ctx, svc, client.DryRunAll))).To(BeTrue(), "create services")
		})

		It("lets the node agent only read Services and EndpointSlices", func(ctx context.Context) {
			Expect(datapathSA.List(ctx, &corev1.ServiceList{})).To(Succeed())
			Expect(datapathSA.List(ctx, &discoveryv1.EndpointSliceList{})).To(Succeed())
			slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"},
				AddressType: discoveryv1.AddressTypeIPv4}
			Expect(apierrors.IsForbidden(datapathSA.Create(ctx, slice, client.DryRunAll))).To(BeTrue(), "create endpointslices")
			Expect(apierrors.IsForbidden(datapathSA.List(ctx, &corev1.SecretList{}))).To(BeTrue(), "list secrets")
			Expect(apierrors.IsForbidden(datapathSA.List(ctx, &corev1.PodList{}))).To(BeTrue(), "list pods")
		})
	})
})
