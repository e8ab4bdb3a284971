package config_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
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

	It("renders the control loops, the node agent, RBAC, the webhook and the Secret the manager keeps its certificate in", func() {
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
		Expect(kinds).To(HaveKeyWithValue("CustomResourceDefinition", 1))
		Expect(kinds).NotTo(HaveKey("Certificate"), "the default install needs no cert-manager")
		secret := findObject(objects, "Secret", "kube-clusterip-webhook-server-cert")
		Expect(secret).NotTo(BeNil())
		manager := container(findObject(objects, "Deployment", "kube-clusterip-controller-manager"))
		Expect(manager["args"]).To(ContainElement("--webhook-cert-secret=$(WEBHOOK_CERT_SECRET)"))
		Expect(manager["env"]).To(ContainElement(And(HaveKeyWithValue("name", "WEBHOOK_CERT_SECRET"),
			HaveKeyWithValue("value", secret.GetName()))))
		Expect(manager["env"]).To(ContainElement(HaveKeyWithValue("name", "POD_NAMESPACE")))
	})

	It("has a cert-manager overlay that issues the certificate instead", func(ctx context.Context) {
		overlay := decodeObjects(kustomizeBuild("config/cert-manager"))
		Expect(findObject(overlay, "Secret", "kube-clusterip-webhook-server-cert")).To(BeNil(), "cert-manager writes the Secret")
		certificate := findObject(overlay, "Certificate", "kube-clusterip-serving-cert")
		Expect(certificate).NotTo(BeNil())
		secretName, _, _ := unstructured.NestedString(certificate.Object, "spec", "secretName")
		manager := findObject(overlay, "Deployment", "kube-clusterip-controller-manager")
		volumes, _, _ := unstructured.NestedSlice(manager.Object, "spec", "template", "spec", "volumes")
		Expect(volumes).To(ContainElement(HaveKeyWithValue("secret", HaveKeyWithValue("secretName", secretName))))
		Expect(container(manager)["env"]).To(ContainElement(And(HaveKeyWithValue("name", "WEBHOOK_CERT_SECRET"),
			HaveKeyWithValue("value", ""))), "the manager's own certificate keeping is off")
		for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
			for _, obj := range overlay {
				if obj.GetKind() == kind {
					Expect(obj.GetAnnotations()).To(HaveKeyWithValue("cert-manager.io/inject-ca-from", "kube-clusterip-system/kube-clusterip-serving-cert"))
				}
			}
		}
	})

	It("is accepted by the API server, object by object (server-side dry run)", func(ctx context.Context) {
		// Namespaced objects can only be dry-run into a namespace that exists.
		applyForReal(ctx, objects, "Namespace")
		serverSideDryRun(ctx, objects)
	})

	It("runs the node agent as root with NET_ADMIN and NET_RAW only, not privileged, in the host network", func() {
		daemonSet := findObject(objects, "DaemonSet", "kube-clusterip-datapath")
		Expect(daemonSet).NotTo(BeNil())
		hostNetwork, _, _ := unstructured.NestedBool(daemonSet.Object, "spec", "template", "spec", "hostNetwork")
		Expect(hostNetwork).To(BeTrue())
		// The runtime grants added capabilities only to uid 0 (the image's USER is 65532):
		// neither the pod nor the container may leave the agent non-root.
		podSC, _, _ := unstructured.NestedMap(daemonSet.Object, "spec", "template", "spec", "securityContext")
		Expect(podSC).NotTo(HaveKeyWithValue("runAsNonRoot", true))
		sc := container(daemonSet)["securityContext"].(map[string]any)
		Expect(sc["runAsUser"]).To(BeNumerically("==", 0))
		Expect(sc["runAsNonRoot"]).NotTo(BeTrue())
		Expect(sc["privileged"]).To(BeFalse())
		Expect(sc["allowPrivilegeEscalation"]).To(BeFalse())
		Expect(sc["capabilities"]).To(HaveKeyWithValue("add", ConsistOf("NET_ADMIN", "NET_RAW")))
		Expect(sc["capabilities"]).To(HaveKeyWithValue("drop", ConsistOf("ALL")))
	})

	It("sets kube-proxy's conntrack settings in a privileged init container that runs --init-only, from the same ConfigMap as the agent", func() {
		daemonSet := findObject(objects, "DaemonSet", "kube-clusterip-datapath")
		inits, _, _ := unstructured.NestedSlice(daemonSet.Object, "spec", "template", "spec", "initContainers")
		Expect(inits).To(HaveLen(1))
		initContainer, agent := inits[0].(map[string]any), container(daemonSet)
		Expect(initContainer["args"]).To(ContainElement("--init-only"))
		Expect(initContainer["image"]).To(Equal(agent["image"]))
		Expect(initContainer["securityContext"]).To(HaveKeyWithValue("privileged", true))
		Expect(initContainer["envFrom"]).To(Equal(agent["envFrom"]))
		settings := findObject(objects, "ConfigMap", agent["envFrom"].([]any)[0].(map[string]any)["configMapRef"].(map[string]any)["name"].(string))
		data, _, _ := unstructured.NestedStringMap(settings.Object, "data")
		// kube-proxy's defaults.
		Expect(data).To(And(HaveKeyWithValue("CONNTRACK_MAX_PER_CORE", "32768"), HaveKeyWithValue("CONNTRACK_MIN", "131072"),
			HaveKeyWithValue("CONNTRACK_TCP_TIMEOUT_ESTABLISHED", "24h"), HaveKeyWithValue("CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT", "1h")))
		conntrackArgs := []any{"--conntrack-max-per-core=$(CONNTRACK_MAX_PER_CORE)", "--conntrack-min=$(CONNTRACK_MIN)",
			"--conntrack-tcp-timeout-established=$(CONNTRACK_TCP_TIMEOUT_ESTABLISHED)", "--conntrack-tcp-timeout-close-wait=$(CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT)"}
		Expect(initContainer["args"]).To(ContainElements(conntrackArgs...))
		Expect(agent["args"]).To(ContainElements(conntrackArgs...), "the agent checks the same values at start")
	})

	It("gives the node agent the API server's address and the CIDRs from one ConfigMap", func() {
		agent := container(findObject(objects, "DaemonSet", "kube-clusterip-datapath"))
		envFrom, _ := agent["envFrom"].([]any)
		Expect(envFrom).To(HaveLen(1))
		settingsName := envFrom[0].(map[string]any)["configMapRef"].(map[string]any)["name"].(string)
		settings := findObject(objects, "ConfigMap", settingsName)
		Expect(settings).NotTo(BeNil(), "ConfigMap %s", settingsName)
		data, _, _ := unstructured.NestedStringMap(settings.Object, "data")
		// KUBERNETES_SERVICE_HOST/PORT replace the `kubernetes` ClusterIP kubelet would give,
		// which on a node without kube-proxy only the agent itself would program.
		Expect(data).To(HaveKey("KUBERNETES_SERVICE_HOST"))
		Expect(data).To(HaveKeyWithValue("KUBERNETES_SERVICE_PORT", Not(BeEmpty())))
		Expect(data).To(HaveKey("CLUSTER_CIDR"))
		Expect(data).To(HaveKey("SERVICE_CIDR"))
		Expect(agent["args"]).To(ContainElements("--cluster-cidr=$(CLUSTER_CIDR)", "--service-cluster-ip-range=$(SERVICE_CIDR)"))
		for _, arg := range agent["args"].([]any) {
			Expect(arg).NotTo(MatchRegexp(`[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/`), "no CIDR hard-coded in the DaemonSet")
		}
	})

	It("limits both workloads' memory, with the Go runtime told the limit (GOMEMLIMIT)", func() {
		for _, workload := range []*unstructured.Unstructured{
			findObject(objects, "DaemonSet", "kube-clusterip-datapath"),
			findObject(objects, "Deployment", "kube-clusterip-controller-manager"),
		} {
			Expect(workload).NotTo(BeNil())
			c := container(workload)
			limit, _, _ := unstructured.NestedString(c, "resources", "limits", "memory")
			Expect(limit).NotTo(BeEmpty(), "%s: a memory limit", workload.GetName())
			env, _ := c["env"].([]any)
			Expect(env).To(ContainElement(HaveKeyWithValue("valueFrom",
				HaveKeyWithValue("resourceFieldRef", HaveKeyWithValue("resource", "limits.memory")))), "%s: GOMEMLIMIT", workload.GetName())
			for _, e := range env {
				if ref, found, _ := unstructured.NestedString(e.(map[string]any), "valueFrom", "resourceFieldRef", "resource"); found && ref == "limits.memory" {
					Expect(e).To(HaveKeyWithValue("name", "GOMEMLIMIT"))
				}
			}
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

		It("lets the control loops record leader election Events through both Event APIs", func(ctx context.Context) {
			core := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: installNamespace},
				InvolvedObject: corev1.ObjectReference{Kind: "Lease", Namespace: installNamespace, Name: "kube-clusterip.clusterip.dev"},
				Reason:         "LeaderElection", Message: "probe", Type: corev1.EventTypeNormal}
			Expect(controllerSA.Create(ctx, core, client.DryRunAll)).To(Succeed(), "core/v1 Events")
			newAPI := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: installNamespace},
				EventTime: metav1.NewMicroTime(time.Now()), ReportingController: "kube-clusterip", ReportingInstance: "probe",
				Action: "LeaderElection", Reason: "LeaderElection", Type: corev1.EventTypeNormal,
				Regarding: corev1.ObjectReference{Kind: "Lease", Namespace: installNamespace, Name: "kube-clusterip.clusterip.dev"}}
			Expect(controllerSA.Create(ctx, newAPI, client.DryRunAll)).To(Succeed(), "events.k8s.io Events")
		})

		It("lets the control loops renew only their own webhook Secret and webhook configurations", func(ctx context.Context) {
			applyForReal(ctx, objects, "Secret", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
			// The configurations are cluster-wide: other specs (the fail-closed install) create
			// their own of the same names.
			DeferCleanup(func(ctx context.Context) {
				Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
					ObjectMeta: metav1.ObjectMeta{Name: "kube-clusterip-mutating-webhook-configuration"}}))).To(Succeed())
				Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
					ObjectMeta: metav1.ObjectMeta{Name: "kube-clusterip-validating-webhook-configuration"}}))).To(Succeed())
			})
			secret := &corev1.Secret{}
			Expect(controllerSA.Get(ctx, client.ObjectKey{Namespace: installNamespace, Name: "kube-clusterip-webhook-server-cert"}, secret)).To(Succeed())
			secret.StringData = map[string]string{"probe": "x"}
			Expect(controllerSA.Update(ctx, secret, client.DryRunAll)).To(Succeed())
			other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: installNamespace}}
			Expect(apierrors.IsForbidden(controllerSA.Create(ctx, other, client.DryRunAll))).To(BeTrue(), "create other secrets")
			Expect(apierrors.IsForbidden(controllerSA.List(ctx, &corev1.SecretList{}, client.InNamespace("default")))).To(BeTrue(), "secrets of other namespaces")
			mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
			Expect(controllerSA.Get(ctx, client.ObjectKey{Name: "kube-clusterip-mutating-webhook-configuration"}, mutating)).To(Succeed())
			Expect(controllerSA.Update(ctx, mutating, client.DryRunAll)).To(Succeed())
			Expect(apierrors.IsForbidden(controllerSA.Delete(ctx, mutating, client.DryRunAll))).To(BeTrue(), "delete webhook configurations")
		})

		It("lets the node agent only read Services, EndpointSlices and ServiceCIDRs, and record Events", func(ctx context.Context) {
			Expect(datapathSA.List(ctx, &corev1.ServiceList{})).To(Succeed())
			Expect(datapathSA.List(ctx, &discoveryv1.EndpointSliceList{})).To(Succeed())
			Expect(datapathSA.List(ctx, &networkingv1.ServiceCIDRList{})).To(Succeed())
			slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "rbac-probe", Namespace: "default"},
				AddressType: discoveryv1.AddressTypeIPv4}
			Expect(apierrors.IsForbidden(datapathSA.Create(ctx, slice, client.DryRunAll))).To(BeTrue(), "create endpointslices")
			Expect(apierrors.IsForbidden(datapathSA.List(ctx, &corev1.SecretList{}))).To(BeTrue(), "list secrets")
			Expect(apierrors.IsForbidden(datapathSA.List(ctx, &corev1.PodList{}))).To(BeTrue(), "list pods")
		})
	})
})

// findObject returns the object of that kind and name, or nil.
func findObject(objects []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, obj := range objects {
		if obj.GetKind() == kind && obj.GetName() == name {
			return obj
		}
	}
	return nil
}

// container returns the one container of a Deployment's or DaemonSet's pod template.
func container(workload *unstructured.Unstructured) map[string]any {
	GinkgoHelper()
	Expect(workload).NotTo(BeNil())
	containers, _, _ := unstructured.NestedSlice(workload.Object, "spec", "template", "spec", "containers")
	Expect(containers).To(HaveLen(1))
	return containers[0].(map[string]any)
}
