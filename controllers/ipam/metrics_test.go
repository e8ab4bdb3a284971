package ipam

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// A family with several CIDRs (the pool default's ServiceCIDRs) counts them all.
func TestPoolMetricsSumAFamilysCIDRs(t *testing.T) {
	const pool = "metrics-test"
	defer forgetPoolMetrics(pool)
	st := PoolStatus{Status: ipamv1alpha1.ClusterIPPoolStatus{Families: []ipamv1alpha1.FamilyStatus{
		{Family: "IPv4", CIDR: "10.96.0.0/26", Allocated: 3, Free: "59"},
		{Family: "IPv4", CIDR: "10.200.0.0/28", Allocated: 1, Free: "13"},
		{Family: "IPv6", CIDR: "fd00::/120", Allocated: 2, Free: "253"},
	}}}
	for range 2 { // recorded again, the gauges are set, not accumulated
		recordPoolMetrics(pool, st)
	}
	for _, tc := range []struct {
		family          string
		allocated, free float64
	}{{"IPv4", 4, 72}, {"IPv6", 2, 253}} {
		if got := testutil.ToFloat64(poolAllocated.WithLabelValues(pool, tc.family)); got != tc.allocated {
			t.Errorf("%s allocated %v, want %v", tc.family, got, tc.allocated)
		}
		if got := testutil.ToFloat64(poolFree.WithLabelValues(pool, tc.family)); got != tc.free {
			t.Errorf("%s free %v, want %v", tc.family, got, tc.free)
		}
	}
}
