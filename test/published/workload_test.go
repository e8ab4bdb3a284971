package published

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(values ...int) []time.Duration {
		ds := make([]time.Duration, len(values))
		for i, v := range values {
			ds[i] = time.Duration(v) * time.Millisecond
		}
		return ds
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		p    int
		want time.Duration
	}{
		{name: "no values give zero", ds: nil, p: 50, want: 0},
		{name: "p50 of an odd count is the middle", ds: ms(30, 10, 20), p: 50, want: 20 * time.Millisecond},
		{name: "p50 of an even count is the lower middle", ds: ms(40, 10, 30, 20), p: 50, want: 20 * time.Millisecond},
		{name: "p99 of 1..200 is the 198th (nearest rank)", ds: ms(oneTo(200)...), p: 99, want: 198 * time.Millisecond},
		{name: "p100 is the largest", ds: ms(5, 9, 7), p: 100, want: 9 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.ds, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %d) = %v, want %v", tc.ds, tc.p, got, tc.want)
			}
		})
	}
}

func oneTo(n int) []int {
	values := make([]int, n)
	for i := range values {
		values[i] = n - i // reversed, so Percentile has to sort
	}
	return values
}

func TestMetricsSplitAConvergeIntoReadingAndPublishingAndAFlipIntoItsHops(t *testing.T) {
	r := Result{
		Converge:       2300 * time.Millisecond,
		FirstPublished: 450 * time.Millisecond,
		Both:           []time.Duration{8 * time.Millisecond},
		PodWritten:     []time.Duration{2 * time.Millisecond},
		PodSeen:        []time.Duration{3 * time.Millisecond},
		AfterPodSeen:   []time.Duration{5 * time.Millisecond},
		ConvergeCPU:    map[string]float64{"apiserver": 2.9},
	}
	m := r.Metrics()
	for name, want := range map[string]float64{
		"converge-s": 2.3, "first-published-s": 0.45, "publishing-s": 1.85, "flip-p50-ms": 8, "apiserver-cpu-s": 2.9,
		"flip-pod-written-p50-ms": 2, "flip-pod-seen-p50-ms": 3, "flip-after-pod-seen-p50-ms": 5,
	} {
		if got := m[name]; got < want-1e-9 || got > want+1e-9 {
			t.Errorf("Metrics()[%q] = %v, want %v", name, got, want)
		}
	}
}
