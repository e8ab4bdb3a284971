package endpoints

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// TopologyAwareHintsAuto says whether the Service asks for topology aware hints through the
// deprecated service.kubernetes.io/topology-aware-hints annotation or, when that is absent,
// service.kubernetes.io/topology-mode, set to "Auto" or "auto", as upstream reads them (the
// deprecated one wins when both are set). When it does, it takes precedence over
// spec.trafficDistribution.
func TopologyAwareHintsAuto(svc *corev1.Service) bool {
	value, ok := svc.Annotations[corev1.DeprecatedAnnotationTopologyAwareHints]
	if !ok {
		value = svc.Annotations[corev1.AnnotationTopologyMode]
	}
	return value == "Auto" || value == "auto"
}

// trafficDistributionHints are the hints spec.trafficDistribution asks for: zone hints for
// PreferSameZone and its older name PreferClose, zone and node hints for PreferSameNode.
type trafficDistributionHints struct {
	zones, nodes bool
}

func trafficDistributionOf(svc *corev1.Service) trafficDistributionHints {
	if svc.Spec.TrafficDistribution == nil {
		return trafficDistributionHints{}
	}
	switch *svc.Spec.TrafficDistribution {
	case corev1.ServiceTrafficDistributionPreferSameZone, corev1.ServiceTrafficDistributionPreferClose:
		return trafficDistributionHints{zones: true}
	case corev1.ServiceTrafficDistributionPreferSameNode:
		return trafficDistributionHints{zones: true, nodes: true}
	}
	return trafficDistributionHints{}
}

// SetTrafficDistributionHints sets the hints of every endpoint in groups for the Service's
// spec.trafficDistribution, as upstream's endpointslice controller does (KEP-4444, KEP-3015):
//
//   - PreferSameZone (or PreferClose): a ready endpoint is hinted for its own zone;
//   - PreferSameNode: a ready endpoint is also hinted for its own node;
//   - an endpoint without a zone (or node) gets no hint of that kind, and not-ready endpoints
//     get none at all (consumers only look at ready endpoints' hints);
//   - no (or an unknown) trafficDistribution: no hints; under topology-mode Auto this function
//     sets none either (SetTopologyAwareHints computes those, and takes precedence).
//
// Hints are part of what PlanEndpointSlices compares, so a change of them rewrites the slice.
func SetTrafficDistributionHints(svc *corev1.Service, groups []EndpointGroup) {
	want := trafficDistributionOf(svc)
	if TopologyAwareHintsAuto(svc) {
		want = trafficDistributionHints{}
	}
	for gi := range groups {
		for i := range groups[gi].Endpoints {
			e := &groups[gi].Endpoints[i]
			e.Hints = want.hintsFor(e)
		}
	}
}

func (want trafficDistributionHints) hintsFor(e *discoveryv1.Endpoint) *discoveryv1.EndpointHints {
	if !endpointReady(e) {
		return nil
	}
	var hints discoveryv1.EndpointHints
	if want.zones && e.Zone != nil && *e.Zone != "" {
		hints.ForZones = []discoveryv1.ForZone{{Name: *e.Zone}}
	}
	if want.nodes && e.NodeName != nil && *e.NodeName != "" {
		hints.ForNodes = []discoveryv1.ForNode{{Name: *e.NodeName}}
	}
	if hints.ForZones == nil && hints.ForNodes == nil {
		return nil
	}
	return &hints
}

// endpointReady is upstream's reading for hints: Ready set and true.
func endpointReady(e *discoveryv1.Endpoint) bool {
	return e.Conditions.Ready != nil && *e.Conditions.Ready
}
