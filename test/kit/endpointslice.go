package kit

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EndpointSliceWrapper builds an EndpointSlice:
// MakeEndpointSlice("backend-abc", "shop").Service("backend").TCPPort("http", 8080).Endpoints(kit.ReadyEndpoint("10.244.1.10")).Obj().
type EndpointSliceWrapper struct{ slice discoveryv1.EndpointSlice }

// MakeEndpointSlice starts an IPv4 EndpointSlice without ports or endpoints. An empty name with
// GenerateName set through Mutate, or GenerateName(prefix), lets the API server name it.
func MakeEndpointSlice(name, namespace string) *EndpointSliceWrapper {
	return &EndpointSliceWrapper{slice: discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: namespace},
		AddressType: discoveryv1.AddressTypeIPv4,
	}}
}

// Obj returns the EndpointSlice built so far (a new copy each call).
func (w *EndpointSliceWrapper) Obj() *discoveryv1.EndpointSlice { return w.slice.DeepCopy() }

// GenerateName lets the API server name the slice prefix<random suffix>.
func (w *EndpointSliceWrapper) GenerateName(prefix string) *EndpointSliceWrapper {
	w.slice.Name, w.slice.GenerateName = "", prefix
	return w
}

// Label sets one label.
func (w *EndpointSliceWrapper) Label(key, value string) *EndpointSliceWrapper {
	metav1.SetMetaDataLabel(&w.slice.ObjectMeta, key, value)
	return w
}

// Service labels the slice as one of Service name's (kubernetes.io/service-name).
func (w *EndpointSliceWrapper) Service(name string) *EndpointSliceWrapper {
	return w.Label(discoveryv1.LabelServiceName, name)
}

// ManagedBy sets the endpointslice.kubernetes.io/managed-by label.
func (w *EndpointSliceWrapper) ManagedBy(controller string) *EndpointSliceWrapper {
	return w.Label(discoveryv1.LabelManagedBy, controller)
}

// AddressType sets the slice's address type.
func (w *EndpointSliceWrapper) AddressType(t discoveryv1.AddressType) *EndpointSliceWrapper {
	w.slice.AddressType = t
	return w
}

// Port appends a port named name (may be empty) with protocol.
func (w *EndpointSliceWrapper) Port(name string, port int32, protocol corev1.Protocol) *EndpointSliceWrapper {
	w.slice.Ports = append(w.slice.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &protocol})
	return w
}

// TCPPort appends a TCP port named name (may be empty).
func (w *EndpointSliceWrapper) TCPPort(name string, port int32) *EndpointSliceWrapper {
	return w.Port(name, port, corev1.ProtocolTCP)
}

// Endpoints appends endpoints.
func (w *EndpointSliceWrapper) Endpoints(endpoints ...discoveryv1.Endpoint) *EndpointSliceWrapper {
	w.slice.Endpoints = append(w.slice.Endpoints, endpoints...)
	return w
}

// Mutate applies edits no other option covers.
func (w *EndpointSliceWrapper) Mutate(edits ...func(*discoveryv1.EndpointSlice)) *EndpointSliceWrapper {
	apply(&w.slice, edits)
	return w
}

// ReadyEndpoint is an endpoint at ip that is ready, serving and not terminating, as the
// EndpointSlice controller writes a ready pod's.
func ReadyEndpoint(ip string) discoveryv1.Endpoint {
	ready, terminating := true, false
	return discoveryv1.Endpoint{Addresses: []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: &terminating}}
}

// OnNode sets the endpoint's nodeName.
func OnNode(ep discoveryv1.Endpoint, node string) discoveryv1.Endpoint {
	ep.NodeName = &node
	return ep
}
