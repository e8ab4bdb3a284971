package endpoints

import (
	"fmt"
	"maps"
	"math"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Messages of the TopologyAwareHints Events, upstream's words.
const (
	HintsNoZoneSpecified                       = "One or more endpoints do not have a zone specified"
	HintsNoAllocatedHintsForZones              = "No hints allocated for zones"
	HintsEnabled                               = "Topology Aware Hints has been enabled"
	HintsDisabled                              = "Topology Aware Hints has been disabled"
	HintsInsufficientNodeInfo                  = "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes"
	HintsNodesReadyInOneZoneOnly               = "Nodes only ready in one zone"
	HintsInsufficientNumberOfEndpoints         = "Insufficient number of endpoints"
	HintsMinAllocationExceedsOverloadThreshold = "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold"
)

// hintsOverloadThreshold is the most overload (20 %) any endpoint should see under
// topology aware hints, upstream's constant.
const hintsOverloadThreshold = 0.2

// ZoneCPU is the allocatable CPU, in millicores, of the ready worker nodes of each zone: the
// capacity topology-mode Auto shares endpoints by.
type ZoneCPU map[string]int64

// ZoneCPUOf sums the allocatable CPU of nodes per zone as upstream's topology cache does:
// control-plane nodes (labels node-role.kubernetes.io/control-plane or /master) and nodes that
// are not Ready are skipped; a counted node without a zone or without allocatable CPU makes
// the information insufficient, and so does a cluster with no CPU at all. It returns nil and
// the reason then.
func ZoneCPUOf(nodes []*corev1.Node) (ZoneCPU, string) {
	cpu := ZoneCPU{}
	for _, node := range nodes {
		if hasControlPlaneLabel(node.Labels) || !isNodeReady(node) {
			continue
		}
		zone := node.Labels[corev1.LabelTopologyZone]
		milli := node.Status.Allocatable.Cpu().MilliValue()
		if zone == "" || milli <= 0 {
			return nil, HintsInsufficientNodeInfo
		}
		cpu[zone] += milli
	}
	switch len(cpu) {
	case 0:
		return nil, HintsInsufficientNodeInfo
	case 1:
		return nil, HintsNodesReadyInOneZoneOnly
	}
	return cpu, ""
}

func hasControlPlaneLabel(labels map[string]string) bool {
	_, cp := labels["node-role.kubernetes.io/control-plane"]
	_, master := labels["node-role.kubernetes.io/master"]
	return cp || master
}

func isNodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// zoneAllocation is how many of a Service's ready endpoints a zone should get.
type zoneAllocation struct {
	minimum int
	desired float64
}

// SetTopologyAwareHints sets the hints of topology-mode Auto on the endpoints in groups, per
// address type, following upstream's topology cache: each zone should receive a share of
// the ready endpoints proportional to its allocatable CPU (cpu, from ZoneCPUOf), so every
// ready endpoint is hinted for its own zone and then, where a zone holds more than its share
// and another less, endpoints are re-hinted from the first to the second. Hints are refused
// (and removed) when the node information is insufficient (cpuRefusal, from ZoneCPUOf), when
// there are fewer ready endpoints than zones, when no allocation keeps every endpoint under
// 20 % overload, or when a ready endpoint has no zone. Not-ready endpoints get no hints.
//
// It returns, per address type of the Service (addressTypes, see AddressTypes) and of the
// groups, "" when hints were set or the reason they were refused (upstream's Event messages); a
// type without endpoints is refused too, for too few endpoints, as upstream refuses it.
//
// Unlike upstream, which keeps the hints of slices it does not otherwise rewrite, the hints
// are computed afresh from all endpoints each time, in endpoint order: the same inputs give
// the same hints, and per-zone counts match upstream's.
func SetTopologyAwareHints(addressTypes []discoveryv1.AddressType, groups []EndpointGroup, cpu ZoneCPU, cpuRefusal string) map[discoveryv1.AddressType]string {
	byType := map[discoveryv1.AddressType][]*discoveryv1.Endpoint{}
	var types []discoveryv1.AddressType
	for _, t := range addressTypes {
		types, byType[t] = append(types, t), nil
	}
	for gi := range groups {
		t := groups[gi].AddressType
		if _, seen := byType[t]; !seen {
			types = append(types, t)
			byType[t] = nil
		}
		for i := range groups[gi].Endpoints {
			e := &groups[gi].Endpoints[i]
			e.Hints = nil
			if endpointReady(e) {
				byType[t] = append(byType[t], e)
			}
		}
	}
	out := map[discoveryv1.AddressType]string{}
	for _, t := range types {
		ready := byType[t]
		refusal := cpuRefusal
		if refusal == "" {
			refusal = hintReadyEndpoints(ready, cpu)
		}
		if refusal != "" {
			for _, e := range ready {
				e.Hints = nil
			}
		}
		out[t] = refusal
	}
	return out
}

// hintReadyEndpoints hints ready endpoints of one address type, or says why it cannot.
func hintReadyEndpoints(ready []*discoveryv1.Endpoint, cpu ZoneCPU) string {
	allocations, refusal := zoneAllocations(len(ready), cpu)
	if refusal != "" {
		return refusal
	}
	hinted := map[string]int{}
	for _, e := range ready {
		if e.Zone == nil || *e.Zone == "" {
			return HintsNoZoneSpecified
		}
		e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: *e.Zone}}}
		hinted[*e.Zone]++
	}
	giving, receiving := givingAndReceivingZones(allocations, hinted)
	for _, e := range ready {
		if len(giving) == 0 || len(receiving) == 0 {
			break
		}
		from := *e.Zone
		if giving[from] == 0 {
			continue
		}
		to := slices.Sorted(maps.Keys(receiving))[0]
		e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: to}}}
		takeOne(giving, from)
		takeOne(receiving, to)
	}
	if len(hinted) == 0 {
		return HintsNoAllocatedHintsForZones
	}
	return ""
}

// takeOne counts one endpoint off a zone, forgetting the zone at zero.
func takeOne(zones map[string]int, zone string) {
	if zones[zone]--; zones[zone] <= 0 {
		delete(zones, zone)
	}
}

// zoneAllocations shares n ready endpoints among the zones by CPU: each zone's desired share,
// and the minimum that keeps its endpoints under the overload threshold.
func zoneAllocations(n int, cpu ZoneCPU) (map[string]zoneAllocation, string) {
	if len(cpu) > n {
		return nil, fmt.Sprintf("%s (%d endpoints, %d zones)", HintsInsufficientNumberOfEndpoints, n, len(cpu))
	}
	var total int64
	for _, milli := range cpu {
		total += milli
	}
	allocations := map[string]zoneAllocation{}
	remaining := n
	for _, zone := range slices.Sorted(maps.Keys(cpu)) {
		desired := float64(cpu[zone]) / float64(total) * float64(n)
		minimum := int(math.Ceil(desired * (1 / (1 + hintsOverloadThreshold))))
		allocations[zone] = zoneAllocation{minimum: minimum, desired: math.Max(desired, float64(minimum))}
		if remaining -= minimum; remaining < 0 {
			return nil, fmt.Sprintf("%s (%d endpoints, %d zones)", HintsMinAllocationExceedsOverloadThreshold, n, len(cpu))
		}
	}
	return allocations, ""
}

// givingAndReceivingZones turns the differences between the desired shares and the endpoints
// each zone holds into whole endpoints to move, largest differences first, as upstream does.
func givingAndReceivingZones(allocations map[string]zoneAllocation, hinted map[string]int) (giving, receiving map[string]int) {
	surplus, deficit := map[string]float64{}, map[string]float64{}
	for zone, a := range allocations {
		switch have := float64(hinted[zone]); {
		case have > a.desired:
			surplus[zone] = have - a.desired
		case have < a.desired:
			deficit[zone] = a.desired - have
		}
	}
	giving, receiving = map[string]int{}, map[string]int{}
	for {
		from, give := largest(surplus)
		to, receive := largest(deficit)
		if from == "" || to == "" || (give < 1 && receive < 1) || give < 0.5 || receive < 0.5 {
			return giving, receiving
		}
		giving[from]++
		surplus[from]--
		receiving[to]++
		deficit[to]--
	}
}

// largest returns the zone with the largest positive value (the first by name on ties).
func largest(values map[string]float64) (string, float64) {
	zone, most := "", 0.0
	for _, z := range slices.Sorted(maps.Keys(values)) {
		if values[z] > most {
			zone, most = z, values[z]
		}
	}
	return zone, most
}
