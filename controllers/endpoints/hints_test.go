package endpoints

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func withTrafficDistribution(value string) svcOption {
	return func(s *corev1.Service) { s.Spec.TrafficDistribution = ptr.To(value) }
}

func withAnnotation(key, value string) svcOption {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[key] = value
	}
}

// renderHints prints each endpoint's hints: "IP zones=a,b nodes=n" or "IP -" without hints.
func renderHints(groups []EndpointGroup) []string {
	out := []string{}
	for _, g := range groups {
		for _, e := range g.Endpoints {
			out = append(out, endpointHintsString(&e))
		}
	}
	sort.Strings(out)
	return out
}

func endpointHintsString(e *discoveryv1.Endpoint) string {
	return strings.Join(e.Addresses, ",") + " " + hintsString(e.Hints)
}

// hintsString prints hints as "zones=a,b nodes=n", or "-" for none.
func hintsString(h *discoveryv1.EndpointHints) string {
	if h == nil {
		return "-"
	}
	var zones, nodes []string
	for _, z := range h.ForZones {
		zones = append(zones, z.Name)
	}
	for _, n := range h.ForNodes {
		nodes = append(nodes, n.Name)
	}
	return fmt.Sprintf("zones=%s nodes=%s", strings.Join(zones, ","), strings.Join(nodes, ","))
}

func TestSetTrafficDistributionHints(t *testing.T) {
	twoZones := pods(pod("a1", "10.0.0.1"), podWith(pod("b1", "10.0.0.2"), onNode("node-b")))
	cases := []struct {
		name  string
		svc   *corev1.Service
		pods  []*corev1.Pod
		nodes map[string]*corev1.Node
		want  []string
	}{
		{name: "no trafficDistribution: no hints",
			svc: service(), pods: twoZones,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}},
		{name: "PreferSameZone: every ready endpoint is hinted for its own zone",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone)), pods: twoZones,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "PreferClose is the older name of PreferSameZone",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferClose)), pods: twoZones,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "PreferSameNode: hinted for its own zone and its own node",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameNode)), pods: twoZones,
			want: []string{"10.0.0.1 zones=zone-a nodes=node-a", "10.0.0.2 zones=zone-b nodes=node-b"}},
		{name: "an unknown trafficDistribution value: no hints",
			svc: service(withTrafficDistribution("PreferSomewhereNice")), pods: twoZones,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}},
		{name: "not-ready and terminating endpoints get no hints",
			svc:  service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone)),
			pods: pods(pod("a1", "10.0.0.1"), podWith(pod("a2", "10.0.0.2"), notReady), podWith(pod("a3", "10.0.0.3"), terminating)),
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 -", "10.0.0.3 -"}},
		{name: "an endpoint on a node without a zone gets no zone hint",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone)), pods: twoZones,
			nodes: nodes(map[string]string{"node-a": "zone-a", "node-b": ""}),
			want:  []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 -"}},
		{name: "PreferSameNode on a node without a zone: a node hint only",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameNode)), pods: twoZones,
			nodes: nodes(map[string]string{"node-a": "zone-a", "node-b": ""}),
			want:  []string{"10.0.0.1 zones=zone-a nodes=node-a", "10.0.0.2 zones= nodes=node-b"}},
		{name: "topology-mode Auto takes precedence over trafficDistribution",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone),
				withAnnotation(corev1.AnnotationTopologyMode, "Auto")), pods: twoZones,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}},
		{name: "the deprecated topology-aware-hints annotation set to auto also takes precedence",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone),
				withAnnotation(corev1.DeprecatedAnnotationTopologyAwareHints, "auto")), pods: twoZones,
			want: []string{"10.0.0.1 -", "10.0.0.2 -"}},
		{name: "topology-mode Disabled leaves trafficDistribution in charge",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone),
				withAnnotation(corev1.AnnotationTopologyMode, "Disabled")), pods: twoZones,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "the deprecated annotation wins over topology-mode when both are set, as upstream reads them",
			svc: service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone),
				withAnnotation(corev1.AnnotationTopologyMode, "Auto"),
				withAnnotation(corev1.DeprecatedAnnotationTopologyAwareHints, "Disabled")), pods: twoZones,
			want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "publishNotReadyAddresses: not-ready pods are published ready, so they are hinted",
			svc:  service(withPublishNotReady, withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone)),
			pods: pods(podWith(pod("a1", "10.0.0.1"), notReady)),
			want: []string{"10.0.0.1 zones=zone-a nodes="}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := tc.nodes
			if ns == nil {
				ns = defaultNodes
			}
			groups, _ := DesiredEndpointGroups(tc.svc, tc.pods, ns)
			SetTrafficDistributionHints(tc.svc, groups)
			if got := renderHints(groups); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// A change of trafficDistribution rewrites the slices in place (hints are compared like every
// other field), and a second pass with the same Service writes nothing.
func TestPlanEndpointSlicesFollowsHints(t *testing.T) {
	ps := pods(pod("a1", "10.0.0.1"), podWith(pod("b1", "10.0.0.2"), onNode("node-b")))
	plain, zonal := service(), service(withTrafficDistribution(corev1.ServiceTrafficDistributionPreferSameZone))
	plan := func(svc *corev1.Service, existing []*discoveryv1.EndpointSlice) (SlicePlan, []*discoveryv1.EndpointSlice) {
		groups, _ := DesiredEndpointGroups(svc, ps, defaultNodes)
		SetTrafficDistributionHints(svc, groups)
		p := PlanEndpointSlices(svc, groups, existing, 100, time.Time{})
		return p, sliceList(applyPlan(existing, p))
	}
	_, base := plan(plain, nil)

	steps := []struct {
		name     string
		svc      *corev1.Service
		wantPlan string
		want     []string
	}{
		{name: "setting PreferSameZone updates the slice with zone hints", svc: zonal,
			wantPlan: "create=0 update=1 delete=0", want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "the same Service again writes nothing", svc: zonal,
			wantPlan: "create=0 update=0 delete=0", want: []string{"10.0.0.1 zones=zone-a nodes=", "10.0.0.2 zones=zone-b nodes="}},
		{name: "removing trafficDistribution removes the hints", svc: plain,
			wantPlan: "create=0 update=1 delete=0", want: []string{"10.0.0.1 -", "10.0.0.2 -"}},
	}
	current := base
	for _, step := range steps {
		p, next := plan(step.svc, current)
		if got := planCounts(p); got != step.wantPlan {
			t.Errorf("%s: plan %s, want %s", step.name, got, step.wantPlan)
		}
		var got []string
		for _, s := range next {
			for _, e := range s.Endpoints {
				got = append(got, endpointHintsString(&e))
			}
		}
		sort.Strings(got)
		if strings.Join(got, "|") != strings.Join(step.want, "|") {
			t.Errorf("%s: got %q, want %q", step.name, got, step.want)
		}
		current = next
	}
}
