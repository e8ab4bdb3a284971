package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a ClusterIPPool.
const (
	// ConditionReady is True when the pool's CIDRs are valid and it hands out addresses.
	ConditionReady = "Ready"
	// ConditionExhausted is True when a family of the pool has no free address left.
	ConditionExhausted = "Exhausted"
	// ConditionConflicting is True when Services hold addresses twice, or the pool overlaps another.
	ConditionConflicting = "Conflicting"
	// ConditionOutsideServiceCIDRs is True when a CIDR of the pool lies outside every ServiceCIDR
	// of the cluster, or only in ones being deleted: the API server would refuse its addresses, so
	// the pool hands out none of them. It is True too for a CIDR that no ServiceCIDR contains but
	// that holds some: the pool hands out from those only.
	ConditionOutsideServiceCIDRs = "OutsideServiceCIDRs"
)

// DefaultPoolName is the pool created at start when the cluster has none.
const DefaultPoolName = "default"

// ClusterIPPoolSpec says which addresses a pool hands out, and to which namespaces.
// +kubebuilder:validation:XValidation:rule="!has(self.reserved) || self.reserved.all(r, self.cidrs.exists(c, isCIDR(c) && isIP(r) && cidr(c).containsIP(r)))",message="every reserved address must lie inside one of the pool's cidrs"
type ClusterIPPoolSpec struct {
	// CIDRs the pool allocates from, at most one per IP family, e.g. ["10.96.0.0/12", "fd00:10:96::/108"].
	// They must lie inside the cluster's Service range (kube-apiserver's --service-cluster-ip-range).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.96.0.0/12 or fd00::/108"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="must be the network address of the CIDR (host bits zero), e.g. 10.96.0.0/12"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || (cidr(self).ip().family() == 4 ? cidr(self).prefixLength() <= 30 : (cidr(self).prefixLength() >= 64 && cidr(self).prefixLength() <= 127))",message="must hold assignable addresses: an IPv4 CIDR of /30 or shorter, or an IPv6 CIDR from /64 to /127"
	// +kubebuilder:validation:XValidation:rule="self.size() < 2 || !isCIDR(self[0]) || !isCIDR(self[1]) || cidr(self[0]).ip().family() != cidr(self[1]).ip().family()",message="cidrs may hold at most one CIDR per IP family"
	// +listType=atomic
	CIDRs []string `json:"cidrs"`

	// NamespaceSelector picks the namespaces whose Services draw from this pool. Empty or absent
	// selects every namespace. When several pools match, the most specific selector wins.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// Reserved addresses are never handed out, neither dynamically nor on request.
	// +optional
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=39
	// +kubebuilder:validation:items:XValidation:rule="isIP(self)",message="must be an IP address such as 10.96.0.53"
	// +listType=set
	Reserved []string `json:"reserved,omitempty"`

	// QuarantineSeconds holds a released address back from dynamic allocation for this long, so a
	// new Service does not inherit an address that stale DNS caches may still resolve. 0 disables it.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	QuarantineSeconds *int32 `json:"quarantineSeconds,omitempty"`
}

// FamilyStatus counts the addresses of one CIDR of a pool. Capacity and free are decimal strings
// because an IPv6 range can hold more addresses than an int64 counts.
type FamilyStatus struct {
	// Family is IPv4 or IPv6.
	Family corev1.IPFamily `json:"family"`
	// CIDR is the range these counts are for.
	CIDR string `json:"cidr"`
	// Capacity is the number of assignable addresses (network and IPv4 broadcast excluded).
	Capacity string `json:"capacity"`
	// Allocated is the number of addresses held by Services.
	Allocated int64 `json:"allocated"`
	// Reserved is the number of addresses held back by spec.reserved.
	Reserved int64 `json:"reserved,omitempty"`
	// Free is the number of addresses still available.
	Free string `json:"free"`
}

// ClusterIPPoolStatus is what the pool holds now.
type ClusterIPPoolStatus struct {
	// ObservedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Families has the counts of each CIDR: the pool's spec.cidrs and, for the pool "default", the
	// CIDRs of ServiceCIDRs that extend it (so a family may appear more than once). A spec CIDR
	// that no ServiceCIDR contains but that holds some shows as those ServiceCIDRs' CIDRs.
	// +optional
	// +listType=map
	// +listMapKey=cidr
	Families []FamilyStatus `json:"families,omitempty"`
	// Allocated is the number of addresses held by Services, all families together.
	// +optional
	Allocated int64 `json:"allocated"`
	// Free is the number of addresses still available, all families together.
	// +optional
	Free string `json:"free,omitempty"`
	// Conditions: Ready, Exhausted, Conflicting, OutsideServiceCIDRs.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ClusterIPPool is a range of ClusterIPs that Services in selected namespaces are given.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cippool
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=`.spec.cidrs`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.allocated`
// +kubebuilder:printcolumn:name="Free",type=string,JSONPath=`.status.free`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterIPPoolSpec   `json:"spec"`
	Status ClusterIPPoolStatus `json:"status,omitempty"`
}

// ClusterIPPoolList is a list of ClusterIPPools.
// +kubebuilder:object:root=true
type ClusterIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterIPPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterIPPool{}, &ClusterIPPoolList{})
}
