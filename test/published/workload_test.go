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
