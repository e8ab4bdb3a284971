package endpoints

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// applyPlan plays a plan against existing slices as the API server would, naming created slices
// svc-gen-N, and returns the resulting slices by name.
func applyPlan(existing []*discoveryv1.EndpointSlice, plan SlicePlan) map[string]*discoveryv1.EndpointSlice {
	out := map[string]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		out[s.Name] = s
	}
	for _, s := range plan.Delete {
		delete(out, s.Name)
	}
	for _, s := range plan.Update {
		out[s.Name] = s
	}
	for i, s := range plan.Create {
		c := s.DeepCopy()
		c.Name = fmt.Sprintf("%sgen-%d-%d", s.GenerateName, len(out), i)
		c.GenerateName = ""
		out[c.Name] = c
	}
	return out
}

func sliceList(m map[string]*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*discoveryv1.EndpointSlice, 0, len(m))
	for _, n := range names {
		out = append(out, m[n])
	}
	return out
}

// converge plans slices for pods from existing and applies the plan.
func converge(svc *corev1.Service, ps []*corev1.Pod, existing []*discoveryv1.EndpointSlice, maxPerSlice int) (SlicePlan, []*discoveryv1.EndpointSlice) {
	groups, _ := DesiredEndpointGroups(svc, ps, defaultNodes)
	plan := PlanEndpointSlices(svc, groups, existing, maxPerSlice, time.Time{})
	return plan, sliceList(applyPlan(existing, plan))
}

func sizes(ss []*discoveryv1.EndpointSlice) []int {
	out := []int{}
	for _, s := range ss {
		out = append(out, len(s.Endpoints))
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out)))
	return out
}

func planCounts(p SlicePlan) string {
	return fmt.Sprintf("create=%d update=%d delete=%d", len(p.Create), len(p.Update), len(p.Delete))
}

func TestPlanEndpointSlices(t *testing.T) {
	svc := service()
	_, base := converge(svc, manyPods("p", 250), nil, 100) // 100 + 100 + 50
	cases := []struct {
		name      string
		svc       *corev1.Service
		pods      []*corev1.Pod
		existing  []*discoveryv1.EndpointSlice
		max       int
		wantPlan  string
		wantSizes []int
		check     func(t *testing.T, plan SlicePlan, after []*discoveryv1.EndpointSlice)
	}{
		{
			name: "a first sync creates full slices of at most maxEndpointsPerSlice",
			svc:  svc, pods: manyPods("p", 250), max: 100,
			wantPlan: "create=3 update=0 delete=0", wantSizes: []int{100, 100, 50},
			check: func(t *testing.T, plan SlicePlan, _ []*discoveryv1.EndpointSlice) {
				s := plan.Create[0]
				if s.GenerateName != "web-" || s.Labels[discoveryv1.LabelServiceName] != "web" ||
					s.Labels[discoveryv1.LabelManagedBy] != endpointrules.SliceControllerName || s.AddressType != discoveryv1.AddressTypeIPv4 {
					t.Errorf("slice metadata = %+v", s.ObjectMeta)
				}
				if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != "svc-uid" || !ptrTrue(s.OwnerReferences[0].Controller) {
					t.Errorf("owner references = %+v", s.OwnerReferences)
				}
			},
		},
		{
			name: "the default maximum is 100 endpoints per slice",
			svc:  svc, pods: manyPods("p", 101), max: 0,
			wantPlan: "create=2 update=0 delete=0", wantSizes: []int{100, 1},
		},
		{
			name: "an unchanged Service writes nothing",
			svc:  svc, pods: manyPods("p", 250), existing: base, max: 100,
			wantPlan: "create=0 update=0 delete=0", wantSizes: []int{100, 100, 50},
		},
		{
			name: "a pod turning not ready updates only the slice that holds it",
			svc:  svc, max: 100, existing: base,
			pods: func() []*corev1.Pod {
				ps := manyPods("p", 250)
				notReady(ps[7])
				return ps
			}(),
			wantPlan: "create=0 update=1 delete=0", wantSizes: []int{100, 100, 50},
			check: func(t *testing.T, plan SlicePlan, _ []*discoveryv1.EndpointSlice) {
				for _, e := range plan.Update[0].Endpoints {
					if e.TargetRef.Name == "p-7" && *e.Conditions.Ready {
						t.Errorf("p-7 still ready")
					}
				}
			},
		},
		{
			name: "a deleted pod is removed from its slice in place",
			svc:  svc, pods: manyPods("p", 250)[1:], existing: base, max: 100,
			wantPlan: "create=0 update=1 delete=0", wantSizes: []int{100, 99, 50},
		},
		{
			name: "new pods go to the slice that is written anyway before any new slice",
			svc:  svc, max: 100, existing: base,
			pods: func() []*corev1.Pod {
				ps := manyPods("p", 250)
				notReady(ps[0])
				return append(ps, manyPods("q", 30)...)
			}(),
			wantPlan: "create=0 update=2 delete=0", wantSizes: []int{100, 100, 80},
		},
		{
			name: "new pods fill the unchanged slice they fit best instead of a new slice",
			svc:  svc, pods: append(manyPods("p", 250), manyPods("q", 30)...), existing: base, max: 100,
			wantPlan: "create=0 update=1 delete=0", wantSizes: []int{100, 100, 80},
		},
		{
			name: "more new pods than fit anywhere get a new slice",
			svc:  svc, pods: append(manyPods("p", 250), manyPods("q", 120)...), existing: base, max: 100,
			wantPlan: "create=1 update=1 delete=0", wantSizes: []int{100, 100, 100, 70},
		},
		{
			name: "a slice whose pods are all gone is deleted",
			svc:  svc, pods: podsNotIn(manyPods("p", 250), base, 50), existing: base, max: 100,
			wantPlan: "create=0 update=0 delete=1", wantSizes: []int{100, 100},
		},
		{
			name: "a Service without endpoints gets one empty placeholder slice",
			svc:  svc, pods: nil, max: 100,
			wantPlan: "create=1 update=0 delete=0", wantSizes: []int{0},
			check: func(t *testing.T, plan SlicePlan, _ []*discoveryv1.EndpointSlice) {
				if s := plan.Create[0]; len(s.Ports) != 0 || s.AddressType != discoveryv1.AddressTypeIPv4 {
					t.Errorf("placeholder = %+v", s)
				}
			},
		},
		{
			name: "an existing placeholder is kept as it is",
			svc:  svc, pods: nil, max: 100, existing: func() []*discoveryv1.EndpointSlice {
				_, after := converge(svc, nil, nil, 100)
				return after
			}(),
			wantPlan: "create=0 update=0 delete=0", wantSizes: []int{0},
		},
		{
			name: "when the last pods go, their slice is reused as the placeholder",
			svc:  svc, pods: nil, existing: base[:1], max: 100,
			wantPlan: "create=0 update=1 delete=0", wantSizes: []int{0},
		},
		{
			name: "the placeholder is replaced when the first pod arrives",
			svc:  svc, pods: manyPods("p", 1), max: 100, existing: func() []*discoveryv1.EndpointSlice {
				_, after := converge(svc, nil, nil, 100)
				return after
			}(),
			wantPlan: "create=0 update=1 delete=0", wantSizes: []int{1},
		},
		{
			name: "a slice of an address type the Service no longer has is deleted",
			svc:  svc, pods: manyPods("p", 250), max: 100,
			existing: append(slices.Clone(base), func() *discoveryv1.EndpointSlice {
				s := base[2].DeepCopy()
				s.Name, s.AddressType = "web-v6", discoveryv1.AddressTypeIPv6
				return s
			}()),
			wantPlan: "create=0 update=0 delete=1", wantSizes: []int{100, 100, 50},
		},
		{
			name: "a slice owned by an older Service of the same name is not kept",
			svc:  service(func(s *corev1.Service) { s.UID = "new-uid" }), pods: manyPods("p", 250)[:50], max: 100,
			existing: base[2:],
			wantPlan: "create=1 update=0 delete=1", wantSizes: []int{50},
			check: func(t *testing.T, plan SlicePlan, _ []*discoveryv1.EndpointSlice) {
				if plan.Create[0].OwnerReferences[0].UID != "new-uid" {
					t.Errorf("new slice is owned by %+v", plan.Create[0].OwnerReferences)
				}
			},
		},
		{
			name: "a Service label change rewrites slice labels",
			svc:  service(withServiceLabels(map[string]string{"team": "a"})), pods: manyPods("p", 250), existing: base, max: 100,
			wantPlan: "create=0 update=3 delete=0", wantSizes: []int{100, 100, 50},
		},
		{
			name: "a dual-stack Service gets slices of both address types",
			svc:  service(withFamilies(corev1.IPv4Protocol, corev1.IPv6Protocol)), pods: pods(pod("a", "10.0.0.1", "fd00::1")), max: 100,
			wantPlan: "create=2 update=0 delete=0", wantSizes: []int{1, 1},
		},
		{
			name: "pods that resolve a named port differently land in slices with different ports",
			svc:  service(withPorts(svcPort("http", 80, intstr.FromString("web"), corev1.ProtocolTCP))), max: 100,
			pods: pods(
				podWith(pod("a", "10.0.0.1"), containerPorts(corev1.ContainerPort{Name: "web", ContainerPort: 8080, Protocol: corev1.ProtocolTCP})),
				podWith(pod("b", "10.0.0.2"), containerPorts(corev1.ContainerPort{Name: "web", ContainerPort: 9090, Protocol: corev1.ProtocolTCP})),
			),
			wantPlan: "create=2 update=0 delete=0", wantSizes: []int{1, 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, after := converge(tc.svc, tc.pods, tc.existing, tc.max)
			if got := planCounts(plan); got != tc.wantPlan {
				t.Errorf("plan = %s, want %s", got, tc.wantPlan)
			}
			if got := sizes(after); !slices.Equal(got, tc.wantSizes) {
				t.Errorf("slice sizes = %v, want %v", got, tc.wantSizes)
			}
			if again, _ := converge(tc.svc, tc.pods, after, tc.max); !again.Empty() {
				t.Errorf("second sync is not a no-op: %s", planCounts(again))
			}
			if tc.check != nil && !t.Failed() {
				tc.check(t, plan, after)
			}
		})
	}
}

func TestPlanEndpointSlicesRecordsTriggerTime(t *testing.T) {
	svc := service()
	groups, _ := DesiredEndpointGroups(svc, pods(pod("a", "10.0.0.1")), defaultNodes)
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	plan := PlanEndpointSlices(svc, groups, nil, 100, at)
	if got := plan.Create[0].Annotations[corev1.EndpointsLastChangeTriggerTime]; got != "2026-05-06T07:08:09Z" {
		t.Errorf("trigger time = %q", got)
	}
}

func TestEndpointSlicesOf1001Pods(t *testing.T) {
	_, after := converge(service(), manyPods("p", 1001), nil, 100)
	if len(after) != 11 {
		t.Fatalf("slices = %d, want 11", len(after))
	}
	for _, s := range after {
		if len(s.Endpoints) > 100 {
			t.Errorf("slice %s has %d endpoints", s.Name, len(s.Endpoints))
		}
	}
}

// podsNotIn drops the pods held by the existing slice of the given size.
func podsNotIn(ps []*corev1.Pod, existing []*discoveryv1.EndpointSlice, size int) []*corev1.Pod {
	held := map[string]bool{}
	for _, s := range existing {
		if len(s.Endpoints) == size {
			for _, e := range s.Endpoints {
				held[e.TargetRef.Name] = true
			}
		}
	}
	return slices.DeleteFunc(slices.Clone(ps), func(p *corev1.Pod) bool { return held[p.Name] })
}

func ptrTrue(b *bool) bool { return b != nil && *b }
