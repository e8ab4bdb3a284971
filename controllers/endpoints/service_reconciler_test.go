package endpoints

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestUnknownNodesMessageIsUpstreams(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}}
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	}
	pods := []*corev1.Pod{pod("b", "node-y"), pod("known", "node-a"), pod("a", "node-x")}
	for _, tc := range []struct {
		unknown []string
		want    string
	}{
		{[]string{"a"}, "skipping Pod a for Service ns/s: Node node-x Not Found"},
		{[]string{"b", "a"}, "[skipping Pod a for Service ns/s: Node node-x Not Found, skipping Pod b for Service ns/s: Node node-y Not Found]"},
	} {
		if got := unknownNodesMessage(svc, pods, tc.unknown); got != tc.want {
			t.Errorf("unknownNodesMessage(%v) = %q; want %q", tc.unknown, got, tc.want)
		}
	}
}

func TestRetryBudgetIsUpstreamsSchedule(t *testing.T) {
	var b retryBudget
	key := types.NamespacedName{Namespace: "ns", Name: "s"}
	var got []time.Duration
	for range maxRetries + 2 {
		got = append(got, b.next(key))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000, 1000, 1000, 0, 1}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Errorf("retries %v; want %v", got, want)
	}
	b.forget(key)
	if d := b.next(key); d != time.Second {
		t.Errorf("after a sync that succeeded, the first retry is in %v; want 1s", d)
	}
}
