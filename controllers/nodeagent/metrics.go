package nodeagent

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kube-clusterip/kube-clusterip/proxysync"
)

// The sync metrics carry kube-proxy's names and labels (ip_family), so that dashboards and
// alerts written for kube-proxy keep working when the agent replaces it.
var (
	syncBuckets  = prometheus.ExponentialBuckets(0.001, 2, 15)
	syncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kubeproxy_sync_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds",
		Buckets: syncBuckets}, []string{"ip_family"})
	fullSyncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kubeproxy_sync_full_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for full resyncs",
		Buckets: syncBuckets}, []string{"ip_family"})
	partialSyncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kubeproxy_sync_partial_proxy_rules_duration_seconds", Help: "SyncProxyRules latency in seconds for partial resyncs",
		Buckets: syncBuckets}, []string{"ip_family"})
	lastSuccessfulSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds", Help: "The last time proxy rules were successfully synced",
	}, []string{"ip_family"})
	lastQueuedSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", Help: "The last time a sync of proxy rules was queued",
	}, []string{"ip_family"})
	syncFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
		Help: "nftables syncs that failed; the kernel kept the last good ruleset.",
	}, []string{"ip_family"})
	networkProgrammingDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kubeproxy_network_programming_duration_seconds",
		Help:    "In Cluster Network Programming Latency in seconds: from an EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time to the sync that applied it",
		Buckets: networkProgrammingBuckets(),
	}, []string{"ip_family"})
	conntrackDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeproxy_conntrack_reconciler_deleted_entries_total", Help: "Cumulative conntrack flows deleted by conntrack reconciler",
	}, []string{"ip_family"})
	conntrackFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kube_clusterip_datapath_conntrack_cleanup_failures_total",
		Help: "Stale UDP conntrack cleanups that failed after a successful sync (the next sync retries).",
	}, []string{"ip_family"})
	proxyHealthzTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeproxy_proxy_healthz_total", Help: "Cumulative proxy healthz HTTP status"}, []string{"code"})
	proxyLivezTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeproxy_proxy_livez_total", Help: "Cumulative proxy livez HTTP status"}, []string{"code"})
	servicesProgrammed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube_clusterip_datapath_services",
		Help: "Services with a ClusterIP given to the datapath in the last sync (not headless ones, nor those of another proxy).",
	})
	endpointsProgrammed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube_clusterip_datapath_endpoints",
		Help: "Endpoints in the EndpointSlices given to the datapath in the last sync.",
	})
	topologyHintServices = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kube_clusterip_datapath_topology_hint_services",
		Help: "Services whose topology hints this node used (traffic kept to endpoints hinted for its node or zone) or ignored (hints missing on some ready endpoint, none for this node or zone, or internalTrafficPolicy Local), as of the last successful sync.",
	}, []string{"family", "hints"})
)

// networkProgrammingBuckets are kube-proxy's: 0.25s and 0.5s, each second to a minute, then
// coarser to five minutes.
func networkProgrammingBuckets() []float64 {
	b := []float64{0.25, 0.5}
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	return append(b, prometheus.LinearBuckets(120, 30, 7)...)
}

func init() {
	metrics.Registry.MustRegister(syncDuration, fullSyncDuration, partialSyncDuration, lastSuccessfulSync, lastQueuedSync,
		syncFailures, networkProgrammingDuration, conntrackDeleted, conntrackFailures, proxyHealthzTotal, proxyLivezTotal,
		servicesProgrammed, endpointsProgrammed, topologyHintServices)
}

// RecordSync exports one sync attempt; pass it as datapath.Config.OnSync.
func RecordSync(result proxysync.Result) {
	family := string(result.Family)
	if result.ConntrackErr != nil {
		conntrackFailures.WithLabelValues(family).Inc()
	}
	conntrackDeleted.WithLabelValues(family).Add(float64(result.StaleUDPFlowsDeleted))
	if result.Err != nil {
		syncFailures.WithLabelValues(family).Inc()
		return
	}
	syncDuration.WithLabelValues(family).Observe(result.Duration.Seconds())
	if result.Full {
		fullSyncDuration.WithLabelValues(family).Observe(result.Duration.Seconds())
	} else {
		partialSyncDuration.WithLabelValues(family).Observe(result.Duration.Seconds())
	}
	lastSuccessfulSync.WithLabelValues(family).SetToCurrentTime()
	topologyHintServices.WithLabelValues(family, "used").Set(float64(result.ServicesUsingHints))
	topologyHintServices.WithLabelValues(family, "ignored").Set(float64(result.ServicesIgnoringHints))
}
