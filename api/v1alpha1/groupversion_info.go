// Package v1alpha1 holds the ipam.clusterip.dev/v1alpha1 API: ClusterIPPool.
// +kubebuilder:object:generate=true
// +groupName=ipam.clusterip.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of our objects.
	GroupVersion = schema.GroupVersion{Group: "ipam.clusterip.dev", Version: "v1alpha1"}

	// SchemeBuilder registers our types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds our types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
