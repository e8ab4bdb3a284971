package endpoints

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// worker is a Ready node in zone with cpu allocatable (e.g. "4").
func worker(name, zone, cpu string, mutate ...func(*corev1.Node)) *corev1.Node {
	n := kit.MakeNode(name).Ready(true).Mutate(func(n *corev1.Node) {
		n.Labels, n.Status.Allocatable = map[string]string{}, corev1.ResourceList{}
	})
	if zone != "" {
		n.Zone(zone)
	}
	if cpu != "" {
		n.AllocatableCPU(cpu)
	}
	return n.Mutate(mutate...).Obj()
}

func controlPlane(n *corev1.Node) { n.Labels["node-role.kubernetes.io/control-plane"] = "" }
func nodeNotReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }

func TestZoneCPUOf(t *testing.T) {
	cases := []struct {
		name        string
		nodes       []*corev1.Node
		want        string
		wantRefusal string
	}{
		{name: "allocatable CPU is summed per zone",
			nodes: []*corev1.Node{worker("a1", "zone-a", "2"), worker("a2", "zone-a", "500m"), worker("b1", "zone-b", "4")},
			want:  "zone-a=2500 zone-b=4000"},
		{name: "control-plane and not-ready nodes do not count",
			nodes: []*corev1.Node{worker("a1", "zone-a", "2"), worker("cp", "zone-c", "8", controlPlane), worker("down", "zone-d", "8", nodeNotReady), worker("b1", "zone-b", "2")},
			want:  "zone-a=2000 zone-b=2000"},
		{name: "a ready worker without a zone: insufficient node information",
			nodes:       []*corev1.Node{worker("a1", "zone-a", "2"), worker("x", "", "2"), worker("b1", "zone-b", "2")},
			wantRefusal: HintsInsufficientNodeInfo},
		{name: "a ready worker without allocatable CPU: insufficient node information",
			nodes:       []*corev1.Node{worker("a1", "zone-a", "2"), worker("b1", "zone-b", "")},
			wantRefusal: HintsInsufficientNodeInfo},
		{name: "nodes ready in one zone only",
			nodes:       []*corev1.Node{worker("a1", "zone-a", "2"), worker("a2", "zone-a", "2"), worker("down", "zone-b", "2", nodeNotReady)},
			wantRefusal: HintsNodesReadyInOneZoneOnly},
		{name: "no node at all: insufficient node information", wantRefusal: HintsInsufficientNodeInfo},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cpu, refusal := ZoneCPUOf(tc.nodes)
			var got []string
			for _, z := range slices.Sorted(maps.Keys(cpu)) {
				got = append(got, fmt.Sprintf("%s=%d", z, cpu[z]))
			}
			if strings.Join(got, " ") != tc.want || refusal != tc.wantRefusal {
				t.Errorf("got %q, refusal %q; want %q, refusal %q", got, refusal, tc.want, tc.wantRefusal)
			}
		})
	}
}

func TestSetTopologyAwareHints(t *testing.T) {
	auto := service(withAnnotation(corev1.AnnotationTopologyMode, "Auto"))
	onA := func(name, ip string) *corev1.Pod { return pod(name, ip) }
	onB := func(name, ip string) *corev1.Pod { return podWith(pod(name, ip), onNode("node-b")) }
	even := ZoneCPU{"zone-a": 4000, "zone-b": 4000}
	cases := []struct {
		name        string
		pods        []*corev1.Pod
		nodes       map[string]*corev1.Node
		cpu         ZoneCPU
		cpuRefusal  string
		want        []string
		wantRefusal string
	}{
		{name: "balanced zones: every ready endpoint is hinted for its own zone",
			pods: pods(onA("a1", "10.0.0.1"), onA("a2", "10.0.0.2"), onB("b1", "10.0.0.3"), onB("b2", "10.0.0.4")), cpu: even,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-a nodes=", "10.0.0.3 zones=zone-b nodes=", "10.0.0.4 zones=zone-b nodes="}},
		{name: "endpoints follow CPU: a zone with 3/4 of the CPU gets 3 of 4 endpoints",
			pods: pods(onA("a1", "10.0.0.1"), onA("a2", "10.0.0.2"), onA("a3", "10.0.0.3"), onA("a4", "10.0.0.4")),
			cpu:  ZoneCPU{"zone-a": 1000, "zone-b": 3000},
			want: []string{"10.0.0.1 zones=zone-b nodes=", "10.0.0.2 zones=zone-b nodes=", "10.0.0.3 zones=zone-b nodes=", "10.0.0.4 zones=zone-a nodes="}},
		{name: "a zone with no endpoint receives some from the other",
			pods: pods(onA("a1", "10.0.0.1"), onA("a2", "10.0.0.2")), cpu: even,
			want: []string{"10.0.0.1 zones=zone-b nodes=", "10.0.0.2 zones=zone-a nodes="}},
		{name: "endpoints already spread as the CPU is: nothing moves",
			pods: pods(onA("a1", "10.0.0.1"), onA("a2", "10.0.0.2"), onA("a3", "10.0.0.3"), onB("b1", "10.0.0.4"), onB("b2", "10.0.0.5")),
			cpu:  ZoneCPU{"zone-a": 3000, "zone-b": 2000},
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-a nodes=", "10.0.0.3 zones=zone-a nodes=", "10.0.0.4 zones=zone-b nodes=", "10.0.0.5 zones=zone-b nodes="}},
		{name: "not-ready endpoints get no hints and do not count",
			pods: pods(onA("a1", "10.0.0.1"), podWith(onA("a2", "10.0.0.2"), notReady), onB("b1", "10.0.0.3")), cpu: even,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 -", "10.0.0.3 zones=zone-b nodes="}},
		{name: "refused: fewer ready endpoints than zones",
			pods: pods(onA("a1", "10.0.0.1"), podWith(onB("b1", "10.0.0.2"), notReady)), cpu: even,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}, wantRefusal: HintsInsufficientNumberOfEndpoints + " (1 endpoints, 2 zones)"},
		{name: "refused: no allocation keeps every zone under the overload threshold",
			pods: pods(onA("a1", "10.0.0.1"), onA("a2", "10.0.0.2"), onB("b1", "10.0.0.3")), cpu: even,
			want: []string{"10.0.0.1 -", "10.0.0.2 -", "10.0.0.3 -"}, wantRefusal: HintsMinAllocationExceedsOverloadThreshold + " (3 endpoints, 2 zones)"},
		{name: "refused: a ready endpoint without a zone",
			pods: pods(onA("a1", "10.0.0.1"), onB("b1", "10.0.0.2")), cpu: even,
			nodes: nodes(map[string]string{"node-a": "zone-a", "node-b": ""}),
			want:  []string{"10.0.0.1 -", "10.0.0.2 -"}, wantRefusal: HintsNoZoneSpecified},
		{name: "refused: insufficient node information",
			pods: pods(onA("a1", "10.0.0.1"), onB("b1", "10.0.0.2")), cpuRefusal: HintsInsufficientNodeInfo,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}, wantRefusal: HintsInsufficientNodeInfo},
		{name: "refused: no endpoint at all, as upstream refuses the empty slice",
			cpu: even, wantRefusal: HintsInsufficientNumberOfEndpoints + " (0 endpoints, 2 zones)"},
		{name: "refused: nodes ready in one zone only",
			pods: pods(onA("a1", "10.0.0.1"), onB("b1", "10.0.0.2")), cpuRefusal: HintsNodesReadyInOneZoneOnly,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}, wantRefusal: HintsNodesReadyInOneZoneOnly},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := tc.nodes
			if ns == nil {
				ns = defaultNodes
			}
			groups, _ := DesiredEndpointGroups(auto, tc.pods, ns)
			outcome := SetTopologyAwareHints(AddressTypes(auto), groups, tc.cpu, tc.cpuRefusal)
			if got := renderHints(groups); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if got := outcome[discoveryv1.AddressTypeIPv4]; got != tc.wantRefusal {
				t.Errorf("refusal %q, want %q", got, tc.wantRefusal)
			}
		})
	}
}
