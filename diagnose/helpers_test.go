package diagnose_test

import (
	"bytes"
	"context"
	"encoding/json"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
)

// result is one run of the command.
type result struct {
	exitCode int
	report   diagnose.Report
	stdout   string
	stderr   string
}

// runDiagnose runs `kube-clusterip diagnose svc/NAME -n NS --kubeconfig ... -o json` plus extra
// flags, and decodes the JSON report when there is one.
func runDiagnose(ctx context.Context, namespace, name string, extra ...string) result {
	GinkgoHelper()
	args := append([]string{"diagnose", "svc/" + name, "-n", namespace, "--kubeconfig", kubeconfig, "-o", "json"}, extra...)
	var stdout, stderr bytes.Buffer
	r := result{exitCode: diagnose.Main(ctx, args, &stdout, &stderr), stdout: stdout.String(), stderr: stderr.String()}
	if r.exitCode != diagnose.ExitError {
		Expect(json.Unmarshal(stdout.Bytes(), &r.report)).To(Succeed(), "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	return r
}

// runDiagnoseText runs the command with its default text output, as the README shows it.
func runDiagnoseText(ctx context.Context, namespace, name string, extra ...string) (string, int) {
	var stdout, stderr bytes.Buffer
	args := append([]string{"diagnose", "svc/" + name, "-n", namespace, "--kubeconfig", kubeconfig}, extra...)
	code := diagnose.Main(ctx, args, &stdout, &stderr)
	return stdout.String() + stderr.String(), code
}

// haveFinding matches a report holding a finding of that severity and check whose message
// contains the text.
func haveFinding(severity diagnose.Severity, check, contains string) OmegaMatcher {
	return WithTransform(func(r diagnose.Report) []diagnose.Finding { return r.Findings },
		ContainElement(And(
			HaveField("Severity", severity),
			HaveField("Check", check),
			HaveField("Message", ContainSubstring(contains)))))
}

// createService creates a ClusterIP Service "backend" selecting app=backend, port 80 -> 8080,
// changed by mutate first.
func createService(ctx context.Context, namespace string, mutate ...func(*corev1.Service)) *corev1.Service {
	GinkgoHelper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "backend"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	Expect(k8sClient.Create(ctx, svc)).To(Succeed())
	return svc
}

// podSpec says how a test pod looks and what kubelet reports for it.
type podSpec struct {
	name   string
	ip     string
	labels map[string]string
	ports  []corev1.ContainerPort
	// notReady makes kubelet report the container running with its readiness probe failing.
	notReady bool
}

// createPod creates the pod and patches its status as kubelet would: Running, podIP, the Ready
// condition and the container's status.
func createPod(ctx context.Context, namespace string, p podSpec) *corev1.Pod {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: namespace, Labels: p.labels},
		Spec: corev1.PodSpec{
			NodeName:   "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10", Ports: p.ports}},
		},
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	ready, reason, message := corev1.ConditionTrue, "", ""
	if p.notReady {
		ready, reason, message = corev1.ConditionFalse, "ContainersNotReady", "containers with unready status: [app]"
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		PodIP:  p.ip,
		PodIPs: []corev1.PodIP{{IP: p.ip}},
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: ready, Reason: reason, Message: message, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "registry.k8s.io/pause:3.10", Ready: !p.notReady,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	return pod
}

// writeEndpoints writes the Endpoints object an endpoints controller would for these addresses.
func writeEndpoints(ctx context.Context, svc *corev1.Service, ready, notReady []string, port int32, annotations map[string]string) {
	GinkgoHelper()
	subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: svc.Spec.Ports[0].Name, Port: port, Protocol: corev1.ProtocolTCP}}}
	for _, ip := range ready {
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: ip})
	}
	for _, ip := range notReady {
		subset.NotReadyAddresses = append(subset.NotReadyAddresses, corev1.EndpointAddress{IP: ip})
	}
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Annotations: annotations}}
	if len(ready)+len(notReady) > 0 {
		ep.Subsets = []corev1.EndpointSubset{subset}
	}
	Expect(k8sClient.Create(ctx, ep)).To(Succeed())
}

// sliceEndpoint is one endpoint of a written EndpointSlice.
type sliceEndpoint struct {
	ip    string
	ready bool
}

// writeSlice writes an EndpointSlice of the Service managed by managedBy.
func writeSlice(ctx context.Context, svc *corev1.Service, managedBy string, port int32, endpoints ...sliceEndpoint) {
	GinkgoHelper()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{GenerateName: svc.Name + "-", Namespace: svc.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(svc.Spec.Ports[0].Name), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, e := range endpoints {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.ready), Terminating: ptr.To(false)},
			NodeName:   ptr.To("node-a"),
		})
	}
	Expect(k8sClient.Create(ctx, slice)).To(Succeed())
}

// publish writes the Endpoints and the EndpointSlice our endpoints controller would write.
func publish(ctx context.Context, svc *corev1.Service, port int32, ready, notReady []string) {
	GinkgoHelper()
	writeEndpoints(ctx, svc, ready, notReady, port, nil)
	var endpoints []sliceEndpoint
	for _, ip := range ready {
		endpoints = append(endpoints, sliceEndpoint{ip: ip, ready: true})
	}
	for _, ip := range notReady {
		endpoints = append(endpoints, sliceEndpoint{ip: ip})
	}
	writeSlice(ctx, svc, "endpointslice-controller.clusterip.dev", port, endpoints...)
}
