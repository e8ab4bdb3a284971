package endpoints

import (
	"maps"
	"net"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

const (
	// DefaultMaxEndpointsPerSubset is upstream's default --mirroring-max-endpoints-per-subset.
	DefaultMaxEndpointsPerSubset = 1000
	// leaderElectionAnnotation marks Endpoints used as a leader election lock: never mirrored.
	leaderElectionAnnotation = "control-plane.alpha.kubernetes.io/leader"
)

// ShouldMirror says whether ep (nil when absent) is mirrored into EndpointSlices: it belongs to an
// existing Service without a selector and is mirrorable.
func ShouldMirror(ep *corev1.Endpoints, svc *corev1.Service) bool {
	return svc != nil && svc.Spec.Selector == nil && mirrorable(ep)
}

// mirrorable says whether ep may be mirrored at all, whatever its Service: it exists, is not
// labelled endpointslice.kubernetes.io/skip-mirror=true and is not a leader election lock.
func mirrorable(ep *corev1.Endpoints) bool {
	if ep == nil || ep.Labels[discoveryv1.LabelSkipMirror] == "true" {
		return false
	}
	_, leaderLock := ep.Annotations[leaderElectionAnnotation]
	return !leaderLock
}

// MirrorSkipped counts the addresses of an Endpoints that were not mirrored.
type MirrorSkipped struct {
	// InvalidIP: the address is not an IP.
	InvalidIP int
	// OverCapacity: the subset had more than the per-subset maximum.
	OverCapacity int
}

// MirroredEndpointGroups turns user-written Endpoints into EndpointSlice contents: subsets are
// repacked, each address becomes an endpoint of its own IP's address type (invalid IPs are skipped),
// ready addresses first, at most maxPerSubset addresses per subset.
func MirroredEndpointGroups(ep *corev1.Endpoints, maxPerSubset int) (groups []EndpointGroup, skipped MirrorSkipped) {
	if maxPerSubset <= 0 {
		maxPerSubset = DefaultMaxEndpointsPerSubset
	}
	var b groupBuilder
	for _, subset := range RepackSubsets(ep.DeepCopy().Subsets) {
		ports := mirroredPorts(subset.Ports)
		added := 0
		add := func(addr corev1.EndpointAddress, ready bool) {
			if added >= maxPerSubset {
				skipped.OverCapacity++
				return
			}
			endpoint, addressType, ok := addressToEndpoint(addr, ready)
			if !ok {
				skipped.InvalidIP++
				return
			}
			added++
			b.add(addressType, ports, endpoint)
		}
		for _, addr := range subset.Addresses {
			add(addr, true)
		}
		for _, addr := range subset.NotReadyAddresses {
			add(addr, false)
		}
	}
	return b.groups(), skipped
}

func mirroredPorts(ports []corev1.EndpointPort) []discoveryv1.EndpointPort {
	out := []discoveryv1.EndpointPort{}
	for _, p := range ports {
		out = append(out, discoveryv1.EndpointPort{
			Name: ptr.To(p.Name), Port: ptr.To(p.Port), Protocol: ptr.To(p.Protocol), AppProtocol: p.AppProtocol,
		})
	}
	sortByHash(out)
	return out
}

func addressToEndpoint(addr corev1.EndpointAddress, ready bool) (discoveryv1.Endpoint, discoveryv1.AddressType, bool) {
	ip := net.ParseIP(addr.IP)
	if ip == nil {
		return discoveryv1.Endpoint{}, "", false
	}
	addressType := discoveryv1.AddressTypeIPv4
	if ip.To4() == nil {
		addressType = discoveryv1.AddressTypeIPv6
	}
	endpoint := discoveryv1.Endpoint{
		Addresses:  []string{ip.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
		TargetRef:  addr.TargetRef,
		NodeName:   addr.NodeName,
	}
	if addr.Hostname != "" {
		endpoint.Hostname = ptr.To(addr.Hostname)
	}
	return endpoint, addressType, true
}

// mirroredLabels are the Endpoints' labels plus the service name and our mirroring managed-by value.
func mirroredLabels(ep *corev1.Endpoints) map[string]string {
	labels := maps.Clone(ep.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[discoveryv1.LabelServiceName] = ep.Name
	labels[discoveryv1.LabelManagedBy] = endpointrules.MirroringControllerName
	return labels
}

// mirroredAnnotations are the Endpoints' annotations except its trigger time and kubectl's
// last-applied configuration.
func mirroredAnnotations(ep *corev1.Endpoints) map[string]string {
	annotations := maps.Clone(ep.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	delete(annotations, corev1.EndpointsLastChangeTriggerTime)
	delete(annotations, corev1.LastAppliedConfigAnnotation)
	return annotations
}

func newMirroredSlice(ep *corev1.Endpoints, g EndpointGroup, name string) *discoveryv1.EndpointSlice {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       ep.Namespace,
			Labels:          mirroredLabels(ep),
			Annotations:     mirroredAnnotations(ep),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ep, corev1.SchemeGroupVersion.WithKind("Endpoints"))},
		},
		AddressType: g.AddressType,
		Ports:       g.Ports,
		Endpoints:   g.Endpoints,
	}
	if name == "" {
		slice.GenerateName = slicePrefix(ep.Name)
	} else {
		slice.Name = name
	}
	return slice
}

// PlanMirroredSlices computes the writes that turn the slices mirrored for ep (labelled with its
// name and our mirroring managed-by value) into groups: one slice per address type and port list,
// kept when its endpoints, labels, annotations and owner already match, extra slices deleted or
// reused for slices that would otherwise be created.
func PlanMirroredSlices(ep *corev1.Endpoints, groups []EndpointGroup, existing []*discoveryv1.EndpointSlice) SlicePlan {
	var plan SlicePlan
	existingByKey := map[string][]*discoveryv1.EndpointSlice{}
	existing = sortedByName(existing)
	for _, s := range existing {
		key := groupKey(s.AddressType, s.Ports)
		existingByKey[key] = append(existingByKey[key], s)
	}
	desiredKeys := map[string]bool{}
	for _, g := range groups {
		key := groupKey(g.AddressType, g.Ports)
		desiredKeys[key] = true
		current := existingByKey[key]
		if len(current) == 0 {
			plan.Create = append(plan.Create, newMirroredSlice(ep, g, ""))
			continue
		}
		plan.Delete = append(plan.Delete, current[1:]...)
		if mirroredSliceUpToDate(ep, g, current[0]) {
			continue
		}
		updated := newMirroredSlice(ep, g, current[0].Name)
		updated.ResourceVersion = current[0].ResourceVersion
		plan.Update = append(plan.Update, updated)
	}
	for _, s := range existing {
		if !desiredKeys[groupKey(s.AddressType, s.Ports)] {
			plan.Delete = append(plan.Delete, s)
		}
	}
	return recycleDeletedNames(plan, func(*discoveryv1.EndpointSlice) bool { return true })
}

func mirroredSliceUpToDate(ep *corev1.Endpoints, g EndpointGroup, s *discoveryv1.EndpointSlice) bool {
	if len(s.Endpoints) != len(g.Endpoints) ||
		!maps.Equal(s.Labels, mirroredLabels(ep)) ||
		!maps.Equal(nonNil(s.Annotations), mirroredAnnotations(ep)) {
		return false
	}
	for _, o := range s.OwnerReferences {
		if o.Kind == "Endpoints" && o.Name == ep.Name && o.UID != ep.UID {
			return false
		}
	}
	desired := make(map[string]*discoveryv1.Endpoint, len(g.Endpoints))
	for i := range g.Endpoints {
		desired[endpointKey(&g.Endpoints[i])] = &g.Endpoints[i]
	}
	for i := range s.Endpoints {
		want, ok := desired[endpointKey(&s.Endpoints[i])]
		if !ok || !endpointsEqualBeyondKey(want, &s.Endpoints[i]) {
			return false
		}
	}
	return true
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
