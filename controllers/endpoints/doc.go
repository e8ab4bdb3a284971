// Package endpoints publishes the endpoints of Services with a selector as kube-controller-manager's
// endpoint and endpointslice controllers do (core/v1 Endpoints and discovery/v1 EndpointSlices), and
// mirrors user-written Endpoints of selectorless Services into EndpointSlices as its
// endpointslicemirroring controller does.
//
// The decisions are pure functions over plain values (EndpointSubsets, DesiredEndpoints,
// DesiredEndpointGroups, PlanEndpointSlices, MirroredEndpointGroups, PlanMirroredSlices); the
// reconcilers only read from the cache, call them and write what differs.
package endpoints
