package endpointrules

// Labels and values that say who writes an Endpoints object or an EndpointSlice. The keys are
// upstream's; the values with clusterip.dev are ours, so that our objects and upstream's
// controllers' never claim each other's.
const (
	// LabelEndpointsManagedBy on an Endpoints object names the controller that writes it; such
	// Endpoints are not mirrored into EndpointSlices.
	LabelEndpointsManagedBy = "endpoints.kubernetes.io/managed-by"
	// EndpointsControllerName is our value of LabelEndpointsManagedBy.
	EndpointsControllerName = "endpoint-controller.clusterip.dev"
	// SliceControllerName is the endpointslice.kubernetes.io/managed-by value of the
	// EndpointSlices we compute from the pods a Service selects.
	SliceControllerName = "endpointslice-controller.clusterip.dev"
	// MirroringControllerName is the endpointslice.kubernetes.io/managed-by value of the
	// EndpointSlices we mirror from user-written Endpoints.
	MirroringControllerName = "endpointslicemirroring-controller.clusterip.dev"
	// UpstreamSliceControllerName is kube-controller-manager's EndpointSlice controller's
	// managed-by value.
	UpstreamSliceControllerName = "endpointslice-controller.k8s.io"
	// UpstreamMirroringControllerName is kube-controller-manager's mirroring managed-by value.
	UpstreamMirroringControllerName = "endpointslicemirroring-controller.k8s.io"
)
