package kit

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodWrapper builds a Pod: MakePod("backend-0", "shop").Labels(labels).IPs("10.244.1.10").Ready(true).Obj().
type PodWrapper struct{ pod corev1.Pod }

// MakePod starts a running pod with one container "app" and no IP yet.
func MakePod(name, namespace string) *PodWrapper {
	return &PodWrapper{pod: corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}}
}

// Obj returns the Pod built so far (a new copy each call).
func (w *PodWrapper) Obj() *corev1.Pod { return w.pod.DeepCopy() }

// Labels sets the pod's labels.
func (w *PodWrapper) Labels(labels map[string]string) *PodWrapper {
	w.pod.Labels = labels
	return w
}

// Node schedules the pod on a node.
func (w *PodWrapper) Node(name string) *PodWrapper {
	w.pod.Spec.NodeName = name
	return w
}

// ContainerPorts declares ports on the container "app".
func (w *PodWrapper) ContainerPorts(ports ...corev1.ContainerPort) *PodWrapper {
	w.pod.Spec.Containers[0].Ports = append(w.pod.Spec.Containers[0].Ports, ports...)
	return w
}

// IPs sets status.podIP to the first IP and status.podIPs to all of them.
func (w *PodWrapper) IPs(ips ...string) *PodWrapper {
	w.pod.Status.PodIP, w.pod.Status.PodIPs = "", nil
	if len(ips) > 0 {
		w.pod.Status.PodIP = ips[0]
	}
	for _, ip := range ips {
		w.pod.Status.PodIPs = append(w.pod.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return w
}

// Ready sets the Ready condition and the container status as kubelet reports them: ready, or not
// ready with the reason kubelet gives while the readiness probe fails.
func (w *PodWrapper) Ready(ready bool) *PodWrapper {
	w.pod.Status.Conditions = []corev1.PodCondition{ReadyCondition(ready)}
	w.pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: w.pod.Spec.Containers[0].Name, Ready: ready,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	return w
}

// Phase sets status.phase.
func (w *PodWrapper) Phase(phase corev1.PodPhase) *PodWrapper {
	w.pod.Status.Phase = phase
	return w
}

// Mutate applies edits no other option covers.
func (w *PodWrapper) Mutate(edits ...func(*corev1.Pod)) *PodWrapper {
	apply(&w.pod, edits)
	return w
}

// ReadyCondition is the pod Ready condition kubelet writes: True, or False with the reason and
// message it gives while a container is not ready.
func ReadyCondition(ready bool) corev1.PodCondition {
	if ready {
		return corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue}
	}
	return corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse,
		Reason: "ContainersNotReady", Message: "containers with unready status: [app]"}
}

// TCPContainerPort is a named TCP container port.
func TCPContainerPort(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}
