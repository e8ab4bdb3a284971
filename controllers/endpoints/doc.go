// Package endpoints publishes the endpoints of Services with a selector as kube-controller-manager's
// endpoint and endpointslice controllers do (core/v1 Endpoints and discovery/v1 EndpointSlices), and
// mirrors user-written Endpoints of selectorless Services into EndpointSlices as its
// endpointslicemirroring controller does.
//
// The decisions are pure functions over plain values (EndpointSubsets, DesiredEndpoints,
// DesiredEndpointGroups, SetTrafficDistributionHints, ZoneCPUOf and SetTopologyAwareHints,
// PlanEndpointSlices, MirroredEndpointGroups, PlanMirroredSlices); the reconcilers only read from
// the cache, call them and write what differs.
//
// Topology hints follow upstream: spec.trafficDistribution PreferSameZone (or PreferClose) hints
// each ready endpoint for its zone, PreferSameNode also for its node; the annotation
// service.kubernetes.io/topology-mode: Auto takes precedence and shares the endpoints among
// zones by their allocatable CPU, or refuses with a Warning Event.
package endpoints
