package endpointrules

import (
	"net"

	corev1 "k8s.io/api/core/v1"
)

// IsPodReady says whether the pod's Ready condition is True.
func IsPodReady(pod *corev1.Pod) bool {
	c := PodReadyCondition(pod)
	return c != nil && c.Status == corev1.ConditionTrue
}

// PodReadyCondition is the pod's Ready condition, nil when it has none yet.
func PodReadyCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// IsPodTerminal says whether the pod has finished for good (Succeeded or Failed): it never serves
// again.
func IsPodTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// HasPodIP says whether the pod has been given an IP.
func HasPodIP(pod *corev1.Pod) bool {
	return pod.Status.PodIP != "" || len(pod.Status.PodIPs) > 0
}

// ShouldPodBeInEndpoints says whether a selected pod is published at all: it has an IP, is not in a
// terminal phase, and is not terminating unless includeTerminating (publishNotReadyAddresses for
// Endpoints; always for EndpointSlices, which mark it terminating instead).
func ShouldPodBeInEndpoints(pod *corev1.Pod, includeTerminating bool) bool {
	if IsPodTerminal(pod) || !HasPodIP(pod) {
		return false
	}
	return includeTerminating || pod.DeletionTimestamp == nil
}

// Conditions are what an EndpointSlice says of one published pod.
type Conditions struct {
	// Ready: the pod gets new connections (serving and not terminating, or the Service publishes
	// not-ready addresses). Endpoints list ready pods in addresses, the others in notReadyAddresses.
	Ready bool
	// Serving: the pod's Ready condition is True, terminating or not.
	Serving bool
	// Terminating: the pod is being deleted.
	Terminating bool
}

// PodConditions are the conditions the endpoints controllers publish for a selected pod.
func PodConditions(svc *corev1.Service, pod *corev1.Pod) Conditions {
	serving := IsPodReady(pod)
	terminating := pod.DeletionTimestamp != nil
	return Conditions{
		Ready:       svc.Spec.PublishNotReadyAddresses || serving && !terminating,
		Serving:     serving,
		Terminating: terminating,
	}
}

// PodIPs are the pod's IPs in status order (PodIPs, or PodIP when only that is set); none when it
// has no IP yet.
func PodIPs(pod *corev1.Pod) []string {
	if len(pod.Status.PodIPs) == 0 {
		if pod.Status.PodIP == "" {
			return nil
		}
		return []string{pod.Status.PodIP}
	}
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return ips
}

// PodIPOfFamily returns the pod's first IP of the family, in canonical text form.
func PodIPOfFamily(pod *corev1.Pod, family corev1.IPFamily) (string, bool) {
	for _, ip := range PodIPs(pod) {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			continue
		}
		if (parsed.To4() == nil) == (family == corev1.IPv6Protocol) {
			return parsed.String(), true
		}
	}
	return "", false
}

// FamilyOf is the IP family of an address in text form.
func FamilyOf(ip string) corev1.IPFamily {
	if parsed := net.ParseIP(ip); parsed != nil && parsed.To4() == nil {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}
