package endpoints

import (
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

const (
	// overCapacityTruncated is the value of corev1.EndpointsOverCapacity on a truncated Endpoints.
	overCapacityTruncated = "truncated"
)

// semanticIgnoreResourceVersion compares endpoints as upstream does: nil and empty are equal, and a
// pod reference's resourceVersion does not matter.
var semanticIgnoreResourceVersion = conversion.EqualitiesOrDie(
	func(a, b corev1.ObjectReference) bool {
		a.ResourceVersion = ""
		b.ResourceVersion = ""
		return a == b
	},
)

// endpointsLabels are the Service's labels, the headless marker when it has no ClusterIP, and our
// managed-by label.
func endpointsLabels(svc *corev1.Service) map[string]string {
	labels := maps.Clone(svc.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	delete(labels, corev1.IsHeadlessService)
	if !isServiceIPSet(svc) {
		labels[corev1.IsHeadlessService] = ""
	}
	labels[endpointrules.LabelEndpointsManagedBy] = endpointrules.EndpointsControllerName
	return labels
}

// DesiredEndpoints returns the Endpoints object to write so that current (nil when absent) publishes
// subsets (from EndpointSubsets) for svc, or nil when current already does: no write for a no-op.
// Subsets beyond MaxEndpointsAddresses are truncated and annotated; other annotations of current
// are kept; triggerTime (when not zero) becomes corev1.EndpointsLastChangeTriggerTime.
func DesiredEndpoints(svc *corev1.Service, subsets []corev1.EndpointSubset, current *corev1.Endpoints, triggerTime time.Time) *corev1.Endpoints {
	subsets, truncated := TruncateSubsets(subsets, MaxEndpointsAddresses)
	labels := endpointsLabels(svc)
	if current != nil &&
		semanticIgnoreResourceVersion.DeepEqual(current.Subsets, subsets) &&
		maps.Equal(current.Labels, labels) &&
		(current.Annotations[corev1.EndpointsOverCapacity] == overCapacityTruncated) == truncated {
		return nil
	}
	desired := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace}}
	if current != nil {
		desired = current.DeepCopy()
	}
	desired.Subsets = subsets
	desired.Labels = labels
	if desired.Annotations == nil {
		desired.Annotations = map[string]string{}
	}
	setTriggerTime(desired.Annotations, triggerTime)
	if truncated {
		desired.Annotations[corev1.EndpointsOverCapacity] = overCapacityTruncated
	} else {
		delete(desired.Annotations, corev1.EndpointsOverCapacity)
	}
	return desired
}

// setTriggerTime records when the change that caused a write happened, or clears a stale record.
func setTriggerTime(annotations map[string]string, triggerTime time.Time) {
	if triggerTime.IsZero() {
		delete(annotations, corev1.EndpointsLastChangeTriggerTime)
		return
	}
	annotations[corev1.EndpointsLastChangeTriggerTime] = triggerTime.UTC().Format(time.RFC3339Nano)
}
