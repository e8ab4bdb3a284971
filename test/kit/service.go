package kit

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ServiceWrapper builds a Service: MakeService("backend", "shop").Selector(labels).TCPPort("http", 80, 8080).Obj().
type ServiceWrapper struct{ svc corev1.Service }

// MakeService starts a ClusterIP Service without selector, ports or ClusterIP.
func MakeService(name, namespace string) *ServiceWrapper {
	return &ServiceWrapper{svc: corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}}
}

// Obj returns the Service built so far (a new copy each call).
func (w *ServiceWrapper) Obj() *corev1.Service { return w.svc.DeepCopy() }

// Selector sets the selector (nil: none, the endpoints are the user's).
func (w *ServiceWrapper) Selector(labels map[string]string) *ServiceWrapper {
	w.svc.Spec.Selector = labels
	return w
}

// Labels sets the Service's own labels.
func (w *ServiceWrapper) Labels(labels map[string]string) *ServiceWrapper {
	w.svc.Labels = labels
	return w
}

// ClusterIP sets spec.clusterIP to the first IP and spec.clusterIPs to all of them.
func (w *ServiceWrapper) ClusterIP(ips ...string) *ServiceWrapper {
	w.svc.Spec.ClusterIP, w.svc.Spec.ClusterIPs = ips[0], ips
	return w
}

// Headless makes it a headless Service (clusterIP None).
func (w *ServiceWrapper) Headless() *ServiceWrapper {
	w.svc.Spec.ClusterIP, w.svc.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	return w
}

// Families sets spec.ipFamilies.
func (w *ServiceWrapper) Families(families ...corev1.IPFamily) *ServiceWrapper {
	w.svc.Spec.IPFamilies = families
	return w
}

// Port appends a port as given.
func (w *ServiceWrapper) Port(p corev1.ServicePort) *ServiceWrapper {
	w.svc.Spec.Ports = append(w.svc.Spec.Ports, p)
	return w
}

// TCPPort appends a TCP port named name (may be empty) from port to the numeric targetPort.
func (w *ServiceWrapper) TCPPort(name string, port, targetPort int32) *ServiceWrapper {
	return w.Port(corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(targetPort), Protocol: corev1.ProtocolTCP})
}

// SessionAffinity sets spec.sessionAffinity.
func (w *ServiceWrapper) SessionAffinity(affinity corev1.ServiceAffinity) *ServiceWrapper {
	w.svc.Spec.SessionAffinity = affinity
	return w
}

// PublishNotReadyAddresses sets spec.publishNotReadyAddresses.
func (w *ServiceWrapper) PublishNotReadyAddresses() *ServiceWrapper {
	w.svc.Spec.PublishNotReadyAddresses = true
	return w
}

// Mutate applies edits no other option covers.
func (w *ServiceWrapper) Mutate(edits ...func(*corev1.Service)) *ServiceWrapper {
	apply(&w.svc, edits)
	return w
}

// IPFamilyPolicy sets spec.ipFamilyPolicy.
func (w *ServiceWrapper) IPFamilyPolicy(policy corev1.IPFamilyPolicy) *ServiceWrapper {
	w.svc.Spec.IPFamilyPolicy = &policy
	return w
}

// ExternalName makes it an ExternalName Service that resolves to name.
func (w *ServiceWrapper) ExternalName(name string) *ServiceWrapper {
	w.svc.Spec.Type, w.svc.Spec.ExternalName = corev1.ServiceTypeExternalName, name
	return w
}

// ClientIPAffinity sets ClientIP session affinity with its timeout.
func (w *ServiceWrapper) ClientIPAffinity(timeoutSeconds int32) *ServiceWrapper {
	w.svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	w.svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeoutSeconds}}
	return w
}

// TrafficDistribution sets spec.trafficDistribution.
func (w *ServiceWrapper) TrafficDistribution(value string) *ServiceWrapper {
	w.svc.Spec.TrafficDistribution = &value
	return w
}

// Annotations sets the Service's annotations.
func (w *ServiceWrapper) Annotations(annotations map[string]string) *ServiceWrapper {
	w.svc.Annotations = annotations
	return w
}
