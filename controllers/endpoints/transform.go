package endpoints

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PodCacheTransform keeps, of a cached Pod, only what endpoints are computed from: identity,
// labels, deletion, node, hostname/subdomain, container ports, phase, IPs and the Ready condition.
// It cuts the cache's memory several-fold on big clusters. Set it as the manager cache's transform
// for Pods (cache.Options.ByObject) only when no other controller of the manager reads Pods.
//
// It trims the pod in place, as client-go allows (the informer alone holds a freshly decoded
// object), and is cheap on a pod it already trimmed: an informer that streams its initial list
// (client-go's watch-list) transforms each pod twice, the second time after the stream has ended
// and before the cache counts as synced.
func PodCacheTransform(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	m := &pod.ObjectMeta
	*m = metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, DeletionTimestamp: m.DeletionTimestamp, CreationTimestamp: m.CreationTimestamp}
	pod.Spec = corev1.PodSpec{NodeName: pod.Spec.NodeName, Hostname: pod.Spec.Hostname, Subdomain: pod.Spec.Subdomain,
		Containers: portsOnly(pod.Spec.Containers), InitContainers: portsOnly(pod.Spec.InitContainers)}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase, PodIP: pod.Status.PodIP, PodIPs: pod.Status.PodIPs,
		Conditions: readyOnly(pod.Status.Conditions)}
	return pod, nil
}

// portsOnly clears, in place, all but the fields endpoints read of each container.
func portsOnly(containers []corev1.Container) []corev1.Container {
	for i, c := range containers {
		containers[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
	}
	return containers
}

// readyOnly returns the Ready condition alone, in a slice of its own so that the others' memory
// goes (unless the conditions are that already).
func readyOnly(conditions []corev1.PodCondition) []corev1.PodCondition {
	if len(conditions) == 1 && conditions[0].Type == corev1.PodReady {
		return conditions
	}
	for _, c := range conditions {
		if c.Type == corev1.PodReady {
			return []corev1.PodCondition{c}
		}
	}
	return nil
}

// NodeCacheTransform keeps, of a cached Node, only what endpoints and topology hints are
// computed from: identity, labels (zone, control-plane role), allocatable CPU and the status of
// the Ready condition (without its heartbeat times). Set it as the manager cache's transform for
// Nodes (cache.Options.ByObject) only when no other controller of the manager reads Nodes.
func NodeCacheTransform(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Node{TypeMeta: node.TypeMeta}
	slim.Name, slim.UID, slim.ResourceVersion, slim.Labels = node.Name, node.UID, node.ResourceVersion, node.Labels
	slim.DeletionTimestamp, slim.CreationTimestamp = node.DeletionTimestamp, node.CreationTimestamp
	// The node agent in the same process reads the taints: a Node tainted
	// ToBeDeletedByClusterAutoscaler fails its /healthz.
	slim.Spec.Taints = node.Spec.Taints
	if cpu, ok := node.Status.Allocatable[corev1.ResourceCPU]; ok {
		slim.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: cpu}
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			slim.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return slim, nil
}
