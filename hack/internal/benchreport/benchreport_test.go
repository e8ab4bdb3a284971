package benchreport

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	out := `goos: linux
BenchmarkAllocateNext/fill=0%-2         	25000000	        46.10 ns/op	       0 B/op	       0 allocs/op
BenchmarkAllocateNext/fill=0%-2         	25000000	        48.00 ns/op	       0 B/op	       0 allocs/op
BenchmarkConverge-2   	       1	10300000000 ns/op	         5.9 converge-s	        11.6 flip-p50-ms
BenchmarkMemory//12-full-2   	       1	    1234 ns/op	       130.5 KiB
PASS
ok  	github.com/kube-clusterip/kube-clusterip/allocator	12.3s`
	got := Parse(out)
	want := Runs{
		"BenchmarkAllocateNext/fill=0%": {"ns/op": {46.1, 48}, "B/op": {0, 0}, "allocs/op": {0, 0}},
		"BenchmarkConverge":             {"ns/op": {10.3e9}, "converge-s": {5.9}, "flip-p50-ms": {11.6}},
		"BenchmarkMemory//12-full":      {"ns/op": {1234}, "KiB": {130.5}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\n got %v\nwant %v", got, want)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []float64
		want   float64
	}{
		{name: "one run", values: []float64{3}, want: 3},
		{name: "odd count takes the middle", values: []float64{9, 1, 5}, want: 5},
		{name: "even count averages the middle two", values: []float64{4, 1, 3, 2}, want: 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Median(tc.values); got != tc.want {
				t.Errorf("Median(%v) = %v, want %v", tc.values, got, tc.want)
			}
		})
	}
}
