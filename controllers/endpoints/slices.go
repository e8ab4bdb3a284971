package endpoints

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

const (
	// DefaultMaxEndpointsPerSlice is upstream's default --max-endpoints-per-slice.
	DefaultMaxEndpointsPerSlice = 100
)

// EndpointGroup is a set of endpoints that share an address type and a port list; it is published
// as one or more EndpointSlices.
type EndpointGroup struct {
	AddressType discoveryv1.AddressType
	// Ports in upstream's canonical (hash) order.
	Ports []discoveryv1.EndpointPort
	// Endpoints sorted by endpointKey, without duplicates.
	Endpoints []discoveryv1.Endpoint
}

// SlicePlan is what to write so that existing EndpointSlices become the desired ones. Slices to
// create carry GenerateName; slices to update are full objects with their name and resourceVersion.
type SlicePlan struct {
	Create []*discoveryv1.EndpointSlice
	Update []*discoveryv1.EndpointSlice
	Delete []*discoveryv1.EndpointSlice
}

// Empty says whether the plan writes nothing.
func (p SlicePlan) Empty() bool { return len(p.Create)+len(p.Update)+len(p.Delete) == 0 }

// AddressTypes are the EndpointSlice address types a Service publishes: one per IP family of the
// Service; without families, the family of its ClusterIP; a headless Service without families gets
// both.
func AddressTypes(svc *corev1.Service) []discoveryv1.AddressType {
	var types []discoveryv1.AddressType
	for _, family := range svc.Spec.IPFamilies {
		t := addressTypeOfFamily(family)
		if t != "" && !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	switch {
	case len(types) > 0:
		return types
	case isServiceIPSet(svc) && isIPv6(svc.Spec.ClusterIP):
		return []discoveryv1.AddressType{discoveryv1.AddressTypeIPv6}
	case isServiceIPSet(svc):
		return []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4}
	}
	return []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6}
}

func addressTypeOfFamily(family corev1.IPFamily) discoveryv1.AddressType {
	switch family {
	case corev1.IPv4Protocol:
		return discoveryv1.AddressTypeIPv4
	case corev1.IPv6Protocol:
		return discoveryv1.AddressTypeIPv6
	}
	return ""
}

func familyOfAddressType(t discoveryv1.AddressType) corev1.IPFamily {
	if t == discoveryv1.AddressTypeIPv6 {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

// DesiredEndpointGroups computes a selector Service's EndpointSlice contents from the pods its
// selector matches and the nodes they run on (for the zone). Terminating pods stay, marked
// terminating and not ready. A pod whose node is not in nodes is left out (unless the Service
// publishes not-ready addresses) and named in unknownNodePods, so that the caller retries later, as
// upstream does.
func DesiredEndpointGroups(svc *corev1.Service, pods []*corev1.Pod, nodes map[string]*corev1.Node) (groups []EndpointGroup, unknownNodePods []string) {
	var b groupBuilder
	for _, addressType := range AddressTypes(svc) {
		for _, pod := range pods {
			if !endpointrules.Selects(svc, pod) || !endpointrules.ShouldPodBeInEndpoints(pod, true) {
				continue
			}
			node, known := nodes[pod.Spec.NodeName]
			if !known && !svc.Spec.PublishNotReadyAddresses {
				if !slices.Contains(unknownNodePods, pod.Name) {
					unknownNodePods = append(unknownNodePods, pod.Name)
				}
				continue
			}
			endpoint := podToEndpoint(pod, node, svc, addressType)
			if len(endpoint.Addresses) == 0 {
				continue
			}
			b.add(addressType, endpointPorts(svc, pod), endpoint)
		}
	}
	return b.groups(), unknownNodePods
}

// groupBuilder collects endpoints into EndpointGroups by address type and port list.
type groupBuilder struct {
	byKey map[string]*EndpointGroup
	order []string
}

func (b *groupBuilder) add(addressType discoveryv1.AddressType, ports []discoveryv1.EndpointPort, endpoint discoveryv1.Endpoint) {
	key := groupKey(addressType, ports)
	g, found := b.byKey[key]
	if !found {
		if b.byKey == nil {
			b.byKey = map[string]*EndpointGroup{}
		}
		g = &EndpointGroup{AddressType: addressType, Ports: ports}
		b.byKey[key] = g
		b.order = append(b.order, key)
	}
	g.Endpoints = append(g.Endpoints, endpoint)
}

// groups returns the groups in the order first seen, each with sorted, unique endpoints.
func (b *groupBuilder) groups() []EndpointGroup {
	var groups []EndpointGroup
	for _, key := range b.order {
		g := b.byKey[key]
		g.Endpoints = dedupeEndpoints(g.Endpoints)
		groups = append(groups, *g)
	}
	return groups
}

func podToEndpoint(pod *corev1.Pod, node *corev1.Node, svc *corev1.Service, addressType discoveryv1.AddressType) discoveryv1.Endpoint {
	c := endpointrules.PodConditions(svc, pod)
	endpoint := discoveryv1.Endpoint{
		Addresses:  []string{},
		Conditions: discoveryv1.EndpointConditions{Ready: &c.Ready, Serving: &c.Serving, Terminating: &c.Terminating},
		TargetRef:  podReference(pod),
	}
	if ip, ok := endpointrules.PodIPOfFamily(pod, familyOfAddressType(addressType)); ok {
		endpoint.Addresses = append(endpoint.Addresses, ip)
	}
	if pod.Spec.NodeName != "" {
		endpoint.NodeName = ptr.To(pod.Spec.NodeName)
	}
	if node != nil && node.Labels[corev1.LabelTopologyZone] != "" {
		endpoint.Zone = ptr.To(node.Labels[corev1.LabelTopologyZone])
	}
	if shouldSetHostname(pod, svc) {
		endpoint.Hostname = ptr.To(pod.Spec.Hostname)
	}
	return endpoint
}

// endpointPorts are the Service's ports this pod serves, in canonical order.
func endpointPorts(svc *corev1.Service, pod *corev1.Pod) []discoveryv1.EndpointPort {
	ports := []discoveryv1.EndpointPort{}
	for i := range svc.Spec.Ports {
		sp := &svc.Spec.Ports[i]
		port, err := endpointrules.FindPort(pod, sp)
		if err != nil {
			continue
		}
		ports = append(ports, discoveryv1.EndpointPort{
			Name: ptr.To(sp.Name), Port: ptr.To(port), Protocol: ptr.To(endpointrules.ServicePortProtocol(sp)), AppProtocol: sp.AppProtocol,
		})
	}
	sortByHash(ports)
	return ports
}

// groupKey identifies an address type and a port list whatever the order of the ports. It only
// has to be canonical (it never leaves the process), so it is built from the fields, not from
// upstream's hash: hashing a printed dump cost a tenth of the controller's CPU at startup.
func groupKey(addressType discoveryv1.AddressType, ports []discoveryv1.EndpointPort) string {
	keys := make([]string, len(ports))
	for i := range ports {
		keys[i] = portKey(&ports[i])
	}
	sort.Strings(keys)
	return string(addressType) + "/" + strings.Join(keys, ";")
}

// portKey writes each field of an EndpointPort, telling an unset field from an empty one.
func portKey(p *discoveryv1.EndpointPort) string {
	var b strings.Builder
	for _, field := range []*string{p.Name, (*string)(p.Protocol), p.AppProtocol} {
		if field == nil {
			b.WriteString("-,")
			continue
		}
		b.WriteString(strconv.Quote(*field))
		b.WriteByte(',')
	}
	if p.Port != nil {
		b.WriteString(strconv.Itoa(int(*p.Port)))
	}
	return b.String()
}

// endpointKey identifies an endpoint across updates (upstream's hash: addresses, hostname, target).
func endpointKey(e *discoveryv1.Endpoint) string {
	addresses := slices.Clone(e.Addresses)
	sort.Strings(addresses)
	var b strings.Builder
	b.WriteString(strings.Join(addresses, ","))
	b.WriteString("|")
	b.WriteString(ptr.Deref(e.Hostname, ""))
	if e.TargetRef != nil {
		fmt.Fprintf(&b, "|%s/%s", e.TargetRef.Namespace, e.TargetRef.Name)
	}
	return b.String()
}

// dedupeEndpoints sorts endpoints by key; of two with one key the later wins, as in upstream's set.
func dedupeEndpoints(endpoints []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	byKey := make(map[string]discoveryv1.Endpoint, len(endpoints))
	for _, e := range endpoints {
		byKey[endpointKey(&e)] = e
	}
	keys := slices.Sorted(maps.Keys(byKey))
	out := make([]discoveryv1.Endpoint, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// endpointsEqualBeyondKey compares what endpointKey leaves out and consumers read (hints included:
// they are reconciled with the endpoints rather than in a second pass as upstream does).
func endpointsEqualBeyondKey(a, b *discoveryv1.Endpoint) bool {
	return ptr.Equal(a.NodeName, b.NodeName) &&
		ptr.Equal(a.Zone, b.Zone) &&
		ptr.Equal(a.Conditions.Ready, b.Conditions.Ready) &&
		ptr.Equal(a.Conditions.Serving, b.Conditions.Serving) &&
		ptr.Equal(a.Conditions.Terminating, b.Conditions.Terminating) &&
		semanticIgnoreResourceVersion.DeepEqual(a.Hints, b.Hints) &&
		semanticIgnoreResourceVersion.DeepEqual(a.TargetRef, b.TargetRef)
}

// sliceLabels are the Service's labels without the reserved keys, plus the service name, the
// headless marker and our managed-by value.
func sliceLabels(svc *corev1.Service) map[string]string {
	labels := map[string]string{}
	for k, v := range svc.Labels {
		if k == discoveryv1.LabelServiceName || k == discoveryv1.LabelManagedBy || k == corev1.IsHeadlessService {
			continue
		}
		labels[k] = v
	}
	if !isServiceIPSet(svc) {
		labels[corev1.IsHeadlessService] = ""
	}
	labels[discoveryv1.LabelServiceName] = svc.Name
	labels[discoveryv1.LabelManagedBy] = endpointrules.SliceControllerName
	return labels
}

// slicePrefix is the GenerateName of a Service's slices: "<name>-" when that is a valid name.
func slicePrefix(name string) string {
	prefix := name + "-"
	if len(validation.IsDNS1123Subdomain(strings.TrimSuffix(prefix, "-")+"a")) != 0 {
		return name
	}
	return prefix
}

func newServiceSlice(svc *corev1.Service, addressType discoveryv1.AddressType, ports []discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    slicePrefix(svc.Name),
			Namespace:       svc.Namespace,
			Labels:          sliceLabels(svc),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))},
		},
		AddressType: addressType,
		Ports:       ports,
		Endpoints:   []discoveryv1.Endpoint{},
	}
}

func ownedBy(slice *discoveryv1.EndpointSlice, svc *corev1.Service) bool {
	for _, o := range slice.OwnerReferences {
		if o.UID == svc.UID && o.Kind == "Service" && o.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// PlanEndpointSlices computes the writes that turn a Service's existing EndpointSlices (those
// labelled with its name and our managed-by value) into groups, with upstream's churn rules:
// endpoints stay in the slice they are in and are updated in place; new endpoints first fill slices
// that are being written anyway (fullest first), then the unchanged slice that they fill best, and
// only then new slices; a slice left empty is deleted, or reused (renamed) for a slice that would
// otherwise be created. A Service with no endpoints of an address type keeps one empty placeholder
// slice of that type. triggerTime is recorded on every slice written.
func PlanEndpointSlices(svc *corev1.Service, groups []EndpointGroup, existing []*discoveryv1.EndpointSlice, maxPerSlice int, triggerTime time.Time) SlicePlan {
	if maxPerSlice <= 0 {
		maxPerSlice = DefaultMaxEndpointsPerSlice
	}
	var plan SlicePlan
	existing = sortedByName(existing)
	supported := AddressTypes(svc)
	byType := map[discoveryv1.AddressType][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		if !slices.Contains(supported, s.AddressType) {
			plan.Delete = append(plan.Delete, s)
			continue
		}
		byType[s.AddressType] = append(byType[s.AddressType], s)
	}
	for _, addressType := range supported {
		typePlan := planAddressType(svc, addressType, groups, byType[addressType], maxPerSlice)
		plan.Create = append(plan.Create, typePlan.Create...)
		plan.Update = append(plan.Update, typePlan.Update...)
		plan.Delete = append(plan.Delete, typePlan.Delete...)
	}
	for _, s := range append(slices.Clone(plan.Create), plan.Update...) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		setTriggerTime(s.Annotations, triggerTime)
	}
	return plan
}

func planAddressType(svc *corev1.Service, addressType discoveryv1.AddressType, groups []EndpointGroup, existing []*discoveryv1.EndpointSlice, maxPerSlice int) SlicePlan {
	var plan SlicePlan
	existingByKey := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		if !ownedBy(s, svc) {
			plan.Delete = append(plan.Delete, s)
			continue
		}
		key := groupKey(s.AddressType, s.Ports)
		existingByKey[key] = append(existingByKey[key], s)
	}
	desiredKeys := map[string]bool{}
	for _, g := range groups {
		if g.AddressType != addressType {
			continue
		}
		key := groupKey(g.AddressType, g.Ports)
		desiredKeys[key] = true
		p := planPortMapping(svc, existingByKey[key], g, maxPerSlice)
		plan.Create = append(plan.Create, p.Create...)
		plan.Update = append(plan.Update, p.Update...)
		plan.Delete = append(plan.Delete, p.Delete...)
	}
	for _, s := range existing {
		if ownedBy(s, svc) && !desiredKeys[groupKey(s.AddressType, s.Ports)] {
			plan.Delete = append(plan.Delete, s)
		}
	}
	if len(existing) == len(plan.Delete) && len(plan.Create) == 0 {
		placeholder := newServiceSlice(svc, addressType, []discoveryv1.EndpointPort{})
		if len(plan.Delete) == 1 && isPlaceholderFor(plan.Delete[0], placeholder) {
			plan.Delete = nil
		} else {
			plan.Create = append(plan.Create, placeholder)
		}
	}
	return recycleDeletedNames(plan, func(s *discoveryv1.EndpointSlice) bool { return ownedBy(s, svc) })
}

func isPlaceholderFor(s, placeholder *discoveryv1.EndpointSlice) bool {
	return s.Namespace == placeholder.Namespace &&
		maps.Equal(s.Labels, placeholder.Labels) &&
		s.AddressType == placeholder.AddressType &&
		len(s.Endpoints) == 0 && len(s.Ports) == 0 &&
		slices.EqualFunc(s.OwnerReferences, placeholder.OwnerReferences, func(a, b metav1.OwnerReference) bool {
			return a.String() == b.String()
		})
}

// recycleDeletedNames turns a create plus a delete of the same address type into one update.
func recycleDeletedNames(plan SlicePlan, reusable func(*discoveryv1.EndpointSlice) bool) SlicePlan {
	for i := 0; i < len(plan.Delete) && len(plan.Create) > 0; {
		old := plan.Delete[i]
		create := plan.Create[len(plan.Create)-1]
		if old.AddressType != create.AddressType || !reusable(old) {
			i++
			continue
		}
		create.Name = old.Name
		create.GenerateName = ""
		create.ResourceVersion = old.ResourceVersion
		create.Annotations = mergeAnnotations(old.Annotations, create.Annotations)
		plan.Create = plan.Create[:len(plan.Create)-1]
		plan.Update = append(plan.Update, create)
		plan.Delete = slices.Delete(plan.Delete, i, i+1)
	}
	return plan
}

func mergeAnnotations(base, override map[string]string) map[string]string {
	if len(base) == 0 && len(override) == 0 {
		return nil
	}
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, override)
	return out
}

func planPortMapping(svc *corev1.Service, existing []*discoveryv1.EndpointSlice, g EndpointGroup, maxPerSlice int) SlicePlan {
	var plan SlicePlan
	desired := make(map[string]*discoveryv1.Endpoint, len(g.Endpoints))
	for i := range g.Endpoints {
		desired[endpointKey(&g.Endpoints[i])] = &g.Endpoints[i]
	}
	labels := sliceLabels(svc)
	var toUpdate, unchanged []*discoveryv1.EndpointSlice
	for _, s := range existing {
		kept := []discoveryv1.Endpoint{}
		changed := false
		for i := range s.Endpoints {
			key := endpointKey(&s.Endpoints[i])
			if want, ok := desired[key]; ok {
				kept = append(kept, *want)
				changed = changed || !endpointsEqualBeyondKey(want, &s.Endpoints[i])
				delete(desired, key)
			}
		}
		switch {
		case len(kept) == 0 && len(s.Endpoints) > 0:
			plan.Delete = append(plan.Delete, s)
		case changed || len(kept) != len(s.Endpoints) || !maps.Equal(s.Labels, labels):
			updated := s.DeepCopy()
			updated.Endpoints = kept
			updated.Labels = labels
			toUpdate = append(toUpdate, updated)
		default:
			unchanged = append(unchanged, s)
		}
	}
	remaining := make([]discoveryv1.Endpoint, 0, len(desired))
	for _, e := range g.Endpoints {
		if _, ok := desired[endpointKey(&e)]; ok {
			remaining = append(remaining, e)
		}
	}
	// Fill the slices that are written anyway, fullest first.
	sort.SliceStable(toUpdate, func(i, j int) bool { return len(toUpdate[i].Endpoints) > len(toUpdate[j].Endpoints) })
	for _, s := range toUpdate {
		n := min(maxPerSlice-len(s.Endpoints), len(remaining))
		if n > 0 {
			s.Endpoints = append(s.Endpoints, remaining[:n]...)
			remaining = remaining[n:]
		}
	}
	for len(remaining) > 0 {
		var fill *discoveryv1.EndpointSlice
		if len(remaining) < maxPerSlice {
			if best := sliceToFill(unchanged, len(remaining), maxPerSlice); best >= 0 {
				fill = unchanged[best].DeepCopy()
				unchanged = slices.Delete(unchanged, best, best+1)
			}
		}
		if fill == nil {
			fill = newServiceSlice(svc, g.AddressType, g.Ports)
		}
		n := min(maxPerSlice-len(fill.Endpoints), len(remaining))
		fill.Endpoints = append(fill.Endpoints, remaining[:n]...)
		remaining = remaining[n:]
		if fill.Name != "" {
			toUpdate = append(toUpdate, fill)
		} else {
			plan.Create = append(plan.Create, fill)
		}
	}
	plan.Update = toUpdate
	return plan
}

// sliceToFill picks the unchanged slice that numEndpoints fill most closely without overflowing.
func sliceToFill(candidates []*discoveryv1.EndpointSlice, numEndpoints, maxPerSlice int) int {
	best, bestDiff := -1, maxPerSlice
	for i, s := range candidates {
		diff := maxPerSlice - (numEndpoints + len(s.Endpoints))
		if diff >= 0 && diff < bestDiff {
			best, bestDiff = i, diff
			if diff == 0 {
				break
			}
		}
	}
	return best
}

func sortedByName(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices.Clone(in)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
