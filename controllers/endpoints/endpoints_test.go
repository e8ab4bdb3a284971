package endpoints

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// manyPods returns n ready pods (or not ready) with IPs from 10.1.0.0 upwards.
func manyPods(prefix string, n int, opts ...podOption) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, n)
	for i := range n {
		p := podWith(pod(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("10.%d.%d.%d", prefix[0], i/256, i%256)), opts...)
		p.UID = types.UID(p.Name)
		out = append(out, p)
	}
	return out
}

func countAddresses(ep *corev1.Endpoints) (ready, notReady int) {
	for _, s := range ep.Subsets {
		ready += len(s.Addresses)
		notReady += len(s.NotReadyAddresses)
	}
	return ready, notReady
}

func TestDesiredEndpointsObject(t *testing.T) {
	trigger := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	svc := service(withServiceLabels(map[string]string{"team": "a"}))
	current := DesiredEndpoints(svc, EndpointSubsets(svc, pods(pod("a", "10.0.0.1"))), nil, trigger)
	current.ResourceVersion = "7"

	cases := []struct {
		name      string
		svc       *corev1.Service
		pods      []*corev1.Pod
		current   *corev1.Endpoints
		wantWrite bool
		check     func(t *testing.T, ep *corev1.Endpoints)
	}{
		{
			name: "a new Endpoints carries the Service's labels, our managed-by label and the trigger time",
			svc:  svc, pods: pods(pod("a", "10.0.0.1")), wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if ep.Name != "web" || ep.Namespace != "ns" || ep.Labels["team"] != "a" ||
					ep.Labels[endpointrules.LabelEndpointsManagedBy] != endpointrules.EndpointsControllerName {
					t.Errorf("metadata = %+v", ep.ObjectMeta)
				}
				if _, headless := ep.Labels[corev1.IsHeadlessService]; headless {
					t.Errorf("a Service with a ClusterIP is labelled headless")
				}
				if got := ep.Annotations[corev1.EndpointsLastChangeTriggerTime]; got != "2026-01-02T03:04:05.000000006Z" {
					t.Errorf("trigger time = %q", got)
				}
			},
		},
		{
			name: "an unchanged Service and pods need no write",
			svc:  svc, pods: pods(pod("a", "10.0.0.1")), current: current, wantWrite: false,
		},
		{
			name: "a pod's resourceVersion in the current targetRef does not cause a write",
			svc:  svc, pods: pods(pod("a", "10.0.0.1")), wantWrite: false,
			current: func() *corev1.Endpoints {
				c := current.DeepCopy()
				c.Subsets[0].Addresses[0].TargetRef.ResourceVersion = "42"
				return c
			}(),
		},
		{
			name: "a new pod updates the Endpoints in place, keeping foreign annotations",
			svc:  svc, pods: pods(pod("a", "10.0.0.1"), pod("b", "10.0.0.2")), wantWrite: true,
			current: func() *corev1.Endpoints {
				c := current.DeepCopy()
				c.Annotations["example.com/note"] = "keep"
				return c
			}(),
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if ep.ResourceVersion != "7" || ep.Annotations["example.com/note"] != "keep" {
					t.Errorf("update lost resourceVersion or annotations: %+v", ep.ObjectMeta)
				}
				if ready, _ := countAddresses(ep); ready != 2 {
					t.Errorf("ready addresses = %d, want 2", ready)
				}
			},
		},
		{
			name: "a label change on the Service is a write",
			svc:  service(withServiceLabels(map[string]string{"team": "b"})), pods: pods(pod("a", "10.0.0.1")),
			current: current, wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if ep.Labels["team"] != "b" {
					t.Errorf("labels = %v", ep.Labels)
				}
			},
		},
		{
			name: "a headless Service's Endpoints are labelled headless",
			svc:  service(headless), pods: pods(pod("a", "10.0.0.1")), wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if _, ok := ep.Labels[corev1.IsHeadlessService]; !ok {
					t.Errorf("labels = %v, want %s", ep.Labels, corev1.IsHeadlessService)
				}
			},
		},
		{
			name: "1001 ready pods are truncated to 1000 addresses with the over-capacity annotation",
			svc:  svc, pods: manyPods("p", 1001), wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if ready, notReady := countAddresses(ep); ready != 1000 || notReady != 0 {
					t.Errorf("addresses = %d ready + %d not ready, want 1000 + 0", ready, notReady)
				}
				if ep.Annotations[corev1.EndpointsOverCapacity] != "truncated" {
					t.Errorf("annotations = %v", ep.Annotations)
				}
			},
		},
		{
			name: "truncation keeps every ready address before not-ready ones",
			svc:  svc, pods: append(manyPods("p", 990), manyPods("q", 20, notReady)...), wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if ready, notReady := countAddresses(ep); ready != 990 || notReady != 10 {
					t.Errorf("addresses = %d ready + %d not ready, want 990 + 10", ready, notReady)
				}
			},
		},
		{
			name: "a truncated Endpoints that is still right needs no write",
			svc:  svc, pods: manyPods("p", 1001), wantWrite: false,
			current: DesiredEndpoints(svc, EndpointSubsets(svc, manyPods("p", 1001)), nil, trigger),
		},
		{
			name: "back under capacity the over-capacity annotation goes away",
			svc:  svc, pods: manyPods("p", 10), wantWrite: true,
			current: DesiredEndpoints(svc, EndpointSubsets(svc, manyPods("p", 1001)), nil, trigger),
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if _, ok := ep.Annotations[corev1.EndpointsOverCapacity]; ok {
					t.Errorf("annotations = %v", ep.Annotations)
				}
			},
		},
		{
			name: "without a trigger time the stale trigger time annotation is cleared on write",
			svc:  svc, pods: pods(pod("b", "10.0.0.2")), current: current, wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if _, ok := ep.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
					t.Errorf("annotations = %v", ep.Annotations)
				}
			},
		},
		{
			name: "a Service whose pods all went away publishes empty subsets",
			svc:  svc, pods: nil, current: current, wantWrite: true,
			check: func(t *testing.T, ep *corev1.Endpoints) {
				if len(ep.Subsets) != 0 {
					t.Errorf("subsets = %v", ep.Subsets)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			triggerTime := trigger
			if tc.current != nil {
				triggerTime = time.Time{}
			}
			got := DesiredEndpoints(tc.svc, EndpointSubsets(tc.svc, tc.pods), tc.current, triggerTime)
			if (got != nil) != tc.wantWrite {
				t.Fatalf("write = %v, want %v", got != nil, tc.wantWrite)
			}
			if got != nil && tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}
