package ipam

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics of ClusterIP assignment, registered once in controller-runtime's registry.
var (
	poolAllocated = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterip_pool_allocated_addresses",
		Help: "Addresses of a ClusterIPPool held by Services, per family.",
	}, []string{"pool", "family"})
	poolFree = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterip_pool_free_addresses",
		Help: "Addresses of a ClusterIPPool that can still be handed out, per family.",
	}, []string{"pool", "family"})
	poolConflicts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "clusterip_pool_conflicting_addresses",
		Help: "ClusterIPs held by more than one Service (reason ClusterIPDuplicate), or of Services the pool serves but outside every pool (ClusterIPOutOfRange).",
	}, []string{"pool", "reason"})
	allocationErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterip_allocation_errors_total",
		Help: "ClusterIP requests denied by the webhook, and addresses the repair loop found out of range or held twice, by reason.",
	}, []string{"pool", "reason"})
	webhookLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "clusterip_webhook_duration_seconds",
		Help:    "Time the ClusterIP admission webhooks take to answer, by webhook and whether they allowed the request.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"webhook", "allowed"})
	stashTakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clusterip_stash_takes_total",
		Help: "Dynamic ClusterIPs the mutating webhook looked for in its stash of claimed and checked addresses, by whether it found one (hit=\"false\": it claimed and checked one on the admission's path).",
	}, []string{"hit"})
)

func init() {
	metrics.Registry.MustRegister(poolAllocated, poolFree, poolConflicts, allocationErrors, webhookLatency, stashTakes)
}

// recordPoolMetrics sets the gauges of one pool from its status, summing the CIDRs of a family
// (the pool default's ServiceCIDRs, a CIDR spanning several ServiceCIDRs).
func recordPoolMetrics(name string, st PoolStatus) {
	poolAllocated.DeletePartialMatch(prometheus.Labels{"pool": name})
	poolFree.DeletePartialMatch(prometheus.Labels{"pool": name})
	for _, f := range st.Status.Families {
		poolAllocated.WithLabelValues(name, string(f.Family)).Add(float64(f.Allocated))
		if free, err := strconv.ParseFloat(f.Free, 64); err == nil {
			poolFree.WithLabelValues(name, string(f.Family)).Add(free)
		}
	}
	poolConflicts.WithLabelValues(name, ReasonDuplicate).Set(float64(st.Duplicates))
	poolConflicts.WithLabelValues(name, ReasonOutOfRange).Set(float64(st.OutOfRange))
}

// forgetPoolMetrics removes a deleted pool's series.
func forgetPoolMetrics(name string) {
	for _, v := range []*prometheus.GaugeVec{poolAllocated, poolFree, poolConflicts} {
		v.DeletePartialMatch(prometheus.Labels{"pool": name})
	}
}
