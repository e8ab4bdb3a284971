package endpointrules

import (
	corev1 "k8s.io/api/core/v1"
)

// PublishedPod is a selected pod as the endpoints controllers publish it.
type PublishedPod struct {
	Pod *corev1.Pod
	Conditions
	// ServesAnyPort says whether one of the Service's ports resolves on the pod. A pod on which
	// none does is left out of Endpoints and published in an EndpointSlice without ports.
	ServesAnyPort bool
}

// ExpectedEndpoints maps each address the endpoints controllers publish for a Service with a
// selector to its pod and conditions: the pods the selector picks that have an IP and have not
// finished (terminating ones included, marked so), one address per IP family of the pod among
// families (IPv4 and IPv6 when none is given).
func ExpectedEndpoints(svc *corev1.Service, pods []*corev1.Pod, families []corev1.IPFamily) map[string]PublishedPod {
	if len(families) == 0 {
		families = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	expected := map[string]PublishedPod{}
	for _, pod := range pods {
		if !Selects(svc, pod) || !ShouldPodBeInEndpoints(pod, true) {
			continue
		}
		published := PublishedPod{Pod: pod, Conditions: PodConditions(svc, pod), ServesAnyPort: ServesAnyPort(svc, pod)}
		for _, family := range families {
			if ip, ok := PodIPOfFamily(pod, family); ok {
				expected[ip] = published
			}
		}
	}
	return expected
}
