package endpointrules

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// HasSelector says whether the endpoints controllers compute the Service's endpoints from pods.
// A Service whose selector is nil has user-written endpoints instead; a non-nil empty selector
// picks every pod of its namespace.
func HasSelector(svc *corev1.Service) bool {
	return svc.Spec.Selector != nil
}

// Selects says whether the Service's selector picks the pod: same namespace, labels match.
func Selects(svc *corev1.Service, pod *corev1.Pod) bool {
	return SelectsLabels(svc, pod.Namespace, pod.Labels)
}

// SelectsLabels says whether the Service's selector picks an object with these labels in namespace.
func SelectsLabels(svc *corev1.Service, namespace string, podLabels map[string]string) bool {
	return HasSelector(svc) && namespace == svc.Namespace &&
		labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(labels.Set(podLabels))
}

// SelectedPods are the pods the Service's selector picks, in any phase, in the order given.
func SelectedPods(svc *corev1.Service, pods []*corev1.Pod) []*corev1.Pod {
	var selected []*corev1.Pod
	for _, pod := range pods {
		if Selects(svc, pod) {
			selected = append(selected, pod)
		}
	}
	return selected
}
