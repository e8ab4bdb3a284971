package kit

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeWrapper builds a Node: MakeNode("node-a").Zone("zone-a").Obj().
type NodeWrapper struct{ node corev1.Node }

// MakeNode starts a Node without labels, spec or status.
func MakeNode(name string) *NodeWrapper {
	return &NodeWrapper{node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}}
}

// Obj returns the Node built so far (a new copy each call).
func (w *NodeWrapper) Obj() *corev1.Node { return w.node.DeepCopy() }

// Label sets one label.
func (w *NodeWrapper) Label(key, value string) *NodeWrapper {
	metav1.SetMetaDataLabel(&w.node.ObjectMeta, key, value)
	return w
}

// Zone sets the topology.kubernetes.io/zone label the topology rules read.
func (w *NodeWrapper) Zone(zone string) *NodeWrapper {
	return w.Label(corev1.LabelTopologyZone, zone)
}

// PodCIDRs sets spec.podCIDR to the first CIDR and spec.podCIDRs to all of them.
func (w *NodeWrapper) PodCIDRs(cidrs ...string) *NodeWrapper {
	w.node.Spec.PodCIDR, w.node.Spec.PodCIDRs = cidrs[0], cidrs
	return w
}

// Ready sets the Ready condition as kubelet reports it (see NodeReadyCondition).
func (w *NodeWrapper) Ready(ready bool) *NodeWrapper {
	w.node.Status.Conditions = []corev1.NodeCondition{NodeReadyCondition(ready)}
	return w
}

// AllocatableCPU sets status.allocatable's cpu (e.g. "4", "500m"); the topology rules weigh
// zones by it.
func (w *NodeWrapper) AllocatableCPU(cpu string) *NodeWrapper {
	if w.node.Status.Allocatable == nil {
		w.node.Status.Allocatable = corev1.ResourceList{}
	}
	w.node.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(cpu)
	return w
}

// Mutate applies edits no other option covers.
func (w *NodeWrapper) Mutate(edits ...func(*corev1.Node)) *NodeWrapper {
	apply(&w.node, edits)
	return w
}

// NodeReadyCondition is the node Ready condition: True, or False.
func NodeReadyCondition(ready bool) corev1.NodeCondition {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return corev1.NodeCondition{Type: corev1.NodeReady, Status: status}
}
