package endpoints

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// userEndpoints is what a user writes for the selectorless Service "web": ready and not-ready
// addresses on one port.
func userEndpoints(ready, notReady []string, opts ...func(*corev1.Endpoints)) *corev1.Endpoints {
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "ep-uid",
			Labels:      map[string]string{"team": "db"},
			Annotations: map[string]string{"example.com/owner": "dba"}},
		Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}}},
	}
	for _, ip := range ready {
		ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: ip})
	}
	for _, ip := range notReady {
		ep.Subsets[0].NotReadyAddresses = append(ep.Subsets[0].NotReadyAddresses, corev1.EndpointAddress{IP: ip})
	}
	for _, o := range opts {
		o(ep)
	}
	return ep
}

func TestShouldMirror(t *testing.T) {
	selectorless := service(withoutSelector)
	cases := []struct {
		name string
		ep   *corev1.Endpoints
		svc  *corev1.Service
		want bool
	}{
		{name: "user Endpoints of a selectorless Service are mirrored", ep: userEndpoints(nil, nil), svc: selectorless, want: true},
		{name: "Endpoints of a Service with a selector are not mirrored", ep: userEndpoints(nil, nil), svc: service(), want: false},
		{name: "Endpoints without a Service are not mirrored", ep: userEndpoints(nil, nil), svc: nil, want: false},
		{name: "absent Endpoints are not mirrored", ep: nil, svc: selectorless, want: false},
		{
			name: "Endpoints labelled skip-mirror are not mirrored",
			ep: userEndpoints(nil, nil, func(ep *corev1.Endpoints) {
				ep.Labels[discoveryv1.LabelSkipMirror] = "true"
			}),
			svc: selectorless, want: false,
		},
		{
			name: "a leader election lock is not mirrored",
			ep: userEndpoints(nil, nil, func(ep *corev1.Endpoints) {
				ep.Annotations["control-plane.alpha.kubernetes.io/leader"] = "{}"
			}),
			svc: selectorless, want: false,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ShouldMirror(tc.ep, tc.svc); got != tc.want {
				t.Errorf("ShouldMirror = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMirroringEventFilters(t *testing.T) {
	user := userEndpoints(nil, nil)
	ours := userEndpoints(nil, nil, func(ep *corev1.Endpoints) { ep.Labels[discoveryv1.LabelSkipMirror] = "true" })
	selectorless, selected := service(withoutSelector), service()
	create := func(o client.Object) func(predicate.Funcs) bool {
		return func(p predicate.Funcs) bool { return p.Create(event.CreateEvent{Object: o}) }
	}
	update := func(old, new client.Object) func(predicate.Funcs) bool {
		return func(p predicate.Funcs) bool { return p.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: new}) }
	}
	del := func(o client.Object) func(predicate.Funcs) bool {
		return func(p predicate.Funcs) bool { return p.Delete(event.DeleteEvent{Object: o}) }
	}
	cases := []struct {
		name   string
		filter predicate.Funcs
		event  func(predicate.Funcs) bool
		want   bool
	}{
		{name: "a user's Endpoints created", filter: mirrorableBeforeOrAfter, event: create(user), want: true},
		{name: "a skip-mirror Endpoints created", filter: mirrorableBeforeOrAfter, event: create(ours), want: false},
		{name: "a skip-mirror Endpoints updated", filter: mirrorableBeforeOrAfter, event: update(ours, ours), want: false},
		{name: "an Endpoints that gains skip-mirror", filter: mirrorableBeforeOrAfter, event: update(user, ours), want: true},
		{name: "an Endpoints that loses skip-mirror", filter: mirrorableBeforeOrAfter, event: update(ours, user), want: true},
		{name: "a user's Endpoints deleted", filter: mirrorableBeforeOrAfter, event: del(user), want: true},
		{name: "a skip-mirror Endpoints deleted", filter: mirrorableBeforeOrAfter, event: del(ours), want: false},
		{name: "a selectorless Service created", filter: selectorlessBeforeOrAfter, event: create(selectorless), want: true},
		{name: "a Service with a selector created", filter: selectorlessBeforeOrAfter, event: create(selected), want: false},
		{name: "a Service with a selector updated", filter: selectorlessBeforeOrAfter, event: update(selected, selected), want: false},
		{name: "a selectorless Service updated", filter: selectorlessBeforeOrAfter, event: update(selectorless, selectorless), want: false},
		{name: "a Service that gains a selector", filter: selectorlessBeforeOrAfter, event: update(selectorless, selected), want: true},
		{name: "a Service that loses its selector", filter: selectorlessBeforeOrAfter, event: update(selected, selectorless), want: true},
		{name: "a selectorless Service deleted", filter: selectorlessBeforeOrAfter, event: del(selectorless), want: true},
		{name: "a Service with a selector deleted", filter: selectorlessBeforeOrAfter, event: del(selected), want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.event(tc.filter); got != tc.want {
				t.Errorf("the mirroring controller queues it: %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMirroredEndpointGroups(t *testing.T) {
	many := make([]string, 0, 1005)
	for i := range 1005 {
		many = append(many, fmt.Sprintf("10.9.%d.%d", i/256, i%256))
	}
	cases := []struct {
		name        string
		ep          *corev1.Endpoints
		wantGroups  []string
		wantSkipped MirrorSkipped
	}{
		{
			name:       "ready and not-ready addresses become ready and not-ready endpoints",
			ep:         userEndpoints([]string{"192.168.1.10"}, []string{"192.168.1.11"}),
			wantGroups: []string{"IPv4 ports=pg:5432/TCP eps=192.168.1.10[R??],192.168.1.11[-??]"},
		},
		{
			name:        "an address that is not an IP is skipped",
			ep:          userEndpoints([]string{"192.168.1.10", "db.example.com"}, nil),
			wantGroups:  []string{"IPv4 ports=pg:5432/TCP eps=192.168.1.10[R??]"},
			wantSkipped: MirrorSkipped{InvalidIP: 1},
		},
		{
			name: "IPv4 and IPv6 addresses go to slices of their own address type",
			ep:   userEndpoints([]string{"192.168.1.10", "fd00::a"}, nil),
			wantGroups: []string{
				"IPv4 ports=pg:5432/TCP eps=192.168.1.10[R??]",
				"IPv6 ports=pg:5432/TCP eps=fd00::a[R??]",
			},
		},
		{
			name: "subsets with different ports become different slices",
			ep: userEndpoints([]string{"192.168.1.10"}, nil, func(ep *corev1.Endpoints) {
				ep.Subsets = append(ep.Subsets, corev1.EndpointSubset{
					Addresses: []corev1.EndpointAddress{{IP: "192.168.1.20"}},
					Ports:     []corev1.EndpointPort{{Name: "pg", Port: 6432, Protocol: corev1.ProtocolTCP}},
				})
			}),
			wantGroups: []string{
				"IPv4 ports=pg:5432/TCP eps=192.168.1.10[R??]",
				"IPv4 ports=pg:6432/TCP eps=192.168.1.20[R??]",
			},
		},
		{
			name:        "at most 1000 addresses per subset are mirrored",
			ep:          userEndpoints(many, nil),
			wantSkipped: MirrorSkipped{OverCapacity: 5},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			groups, skipped := MirroredEndpointGroups(tc.ep, 0)
			if skipped != tc.wantSkipped {
				t.Errorf("skipped = %+v, want %+v", skipped, tc.wantSkipped)
			}
			if tc.wantGroups != nil {
				if got := renderGroups(groups); !slices.Equal(got, tc.wantGroups) {
					t.Errorf("groups:\n got %q\nwant %q", got, tc.wantGroups)
				}
			} else if n := len(groups[0].Endpoints); n != 1000 {
				t.Errorf("mirrored endpoints = %d, want 1000", n)
			}
		})
	}
}

func TestPlanMirroredSlices(t *testing.T) {
	mirror := func(ep *corev1.Endpoints, existing []*discoveryv1.EndpointSlice) (SlicePlan, []*discoveryv1.EndpointSlice) {
		groups, _ := MirroredEndpointGroups(ep, 0)
		plan := PlanMirroredSlices(ep, groups, existing)
		return plan, sliceList(applyPlan(existing, plan))
	}
	original := userEndpoints([]string{"192.168.1.10", "192.168.1.11"}, nil)
	_, base := mirror(original, nil)
	cases := []struct {
		name     string
		ep       *corev1.Endpoints
		existing []*discoveryv1.EndpointSlice
		wantPlan string
		check    func(t *testing.T, after []*discoveryv1.EndpointSlice)
	}{
		{
			name: "a first sync creates a mirrored slice with the Endpoints' labels, annotations and owner",
			ep:   original, wantPlan: "create=1 update=0 delete=0",
			check: func(t *testing.T, after []*discoveryv1.EndpointSlice) {
				s := after[0]
				if s.Labels["team"] != "db" || s.Labels[discoveryv1.LabelServiceName] != "web" ||
					s.Labels[discoveryv1.LabelManagedBy] != endpointrules.MirroringControllerName || s.Annotations["example.com/owner"] != "dba" {
					t.Errorf("metadata = %+v", s.ObjectMeta)
				}
				if o := s.OwnerReferences; len(o) != 1 || o[0].Kind != "Endpoints" || o[0].UID != "ep-uid" {
					t.Errorf("owner references = %+v", o)
				}
			},
		},
		{
			name: "unchanged Endpoints write nothing", ep: original, existing: base,
			wantPlan: "create=0 update=0 delete=0",
		},
		{
			name: "an address turning not ready updates the slice in place",
			ep:   userEndpoints([]string{"192.168.1.10"}, []string{"192.168.1.11"}), existing: base,
			wantPlan: "create=0 update=1 delete=0",
		},
		{
			name: "a label change on the Endpoints is mirrored",
			ep: userEndpoints([]string{"192.168.1.10", "192.168.1.11"}, nil, func(ep *corev1.Endpoints) {
				ep.Labels["team"] = "platform"
			}),
			existing: base, wantPlan: "create=0 update=1 delete=0",
		},
		{
			name: "the trigger time and kubectl's last-applied annotation are not mirrored",
			ep: userEndpoints([]string{"192.168.1.10", "192.168.1.11"}, nil, func(ep *corev1.Endpoints) {
				ep.Annotations[corev1.EndpointsLastChangeTriggerTime] = "2026-01-01T00:00:00Z"
				ep.Annotations[corev1.LastAppliedConfigAnnotation] = "{}"
			}),
			existing: base, wantPlan: "create=0 update=0 delete=0",
		},
		{
			name: "a port change reuses the old slice's name",
			ep: userEndpoints([]string{"192.168.1.10", "192.168.1.11"}, nil, func(ep *corev1.Endpoints) {
				ep.Subsets[0].Ports[0].Port = 6432
			}),
			existing: base, wantPlan: "create=0 update=1 delete=0",
		},
		{
			name: "Endpoints without addresses leave no mirrored slice",
			ep:   userEndpoints(nil, nil), existing: base, wantPlan: "create=0 update=0 delete=1",
		},
		{
			name: "a duplicate mirrored slice is deleted",
			ep:   original, wantPlan: "create=0 update=0 delete=1",
			existing: append(slices.Clone(base), func() *discoveryv1.EndpointSlice {
				s := base[0].DeepCopy()
				s.Name = "zz-duplicate"
				return s
			}()),
		},
		{
			name: "a slice mirrored from a deleted and recreated Endpoints is rebuilt",
			ep: userEndpoints([]string{"192.168.1.10", "192.168.1.11"}, nil, func(ep *corev1.Endpoints) {
				ep.UID = "new-uid"
			}),
			existing: base, wantPlan: "create=0 update=1 delete=0",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, after := mirror(tc.ep, tc.existing)
			if got := planCounts(plan); got != tc.wantPlan {
				t.Errorf("plan = %s, want %s", got, tc.wantPlan)
			}
			if again, _ := mirror(tc.ep, after); !again.Empty() {
				t.Errorf("second sync is not a no-op: %s", planCounts(again))
			}
			if tc.check != nil && !t.Failed() {
				tc.check(t, after)
			}
		})
	}
}
