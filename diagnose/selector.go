package diagnose

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// PodsInOtherNamespaces are the pods outside the Service's namespace that its selector would
// match: a Service and its pods in different namespaces is a common mix-up.
func PodsInOtherNamespaces(svc *corev1.Service, pods []*corev1.Pod) []*corev1.Pod {
	var elsewhere []*corev1.Pod
	for _, pod := range pods {
		if pod.Namespace != svc.Namespace && endpointrules.SelectsLabels(svc, svc.Namespace, pod.Labels) {
			elsewhere = append(elsewhere, pod)
		}
	}
	return elsewhere
}
