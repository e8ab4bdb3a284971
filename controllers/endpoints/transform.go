package endpoints

import (
	corev1 "k8s.io/api/core/v1"
)

// PodCacheTransform keeps, of a cached Pod, only what endpoints are computed from: identity,
// labels, deletion, node, hostname/subdomain, container ports, phase, IPs and the Ready condition.
// It cuts the cache's memory several-fold on big clusters. Set it as the manager cache's transform
// for Pods (cache.Options.ByObject) only when no other controller of the manager reads Pods.
func PodCacheTransform(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{TypeMeta: pod.TypeMeta}
	slim.Name, slim.Namespace, slim.UID = pod.Name, pod.Namespace, pod.UID
	slim.ResourceVersion, slim.Labels = pod.ResourceVersion, pod.Labels
	slim.DeletionTimestamp, slim.CreationTimestamp = pod.DeletionTimestamp, pod.CreationTimestamp
	slim.Spec.NodeName, slim.Spec.Hostname, slim.Spec.Subdomain = pod.Spec.NodeName, pod.Spec.Hostname, pod.Spec.Subdomain
	slim.Spec.Containers = portsOnly(pod.Spec.Containers)
	slim.Spec.InitContainers = portsOnly(pod.Spec.InitContainers)
	slim.Status.Phase, slim.Status.PodIP, slim.Status.PodIPs = pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			slim.Status.Conditions = []corev1.PodCondition{c}
		}
	}
	return slim, nil
}

func portsOnly(containers []corev1.Container) []corev1.Container {
	if len(containers) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(containers))
	for i, c := range containers {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy}
	}
	return out
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
