package nodeagent

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kube-clusterip/kube-clusterip/datapath"
)

var (
	syncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kube_clusterip_datapath_sync_duration_seconds",
		Help:    "Time to apply one nftables sync of one family, by kind (full or partial).",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"family", "kind"})
	syncFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kube_clusterip_datapath_sync_failures_total",
		Help: "nftables syncs that failed; the kernel kept the last good ruleset.",
	}, []string{"family"})
	lastSuccessfulSync = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kube_clusterip_datapath_last_successful_sync_timestamp_seconds",
		Help: "Unix time of the last successful nftables sync.",
	}, []string{"family"})
	servicesProgrammed = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube_clusterip_datapath_services",
		Help: "Services with a ClusterIP given to the datapath in the last sync.",
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

func init() {
	metrics.Registry.MustRegister(syncDuration, syncFailures, lastSuccessfulSync, servicesProgrammed, endpointsProgrammed,
		topologyHintServices)
}

// RecordSync exports one sync attempt; pass it as datapath.Config.OnSync.
func RecordSync(result datapath.SyncResult) {
	family := string(result.Family)
	if result.Err != nil {
		syncFailures.WithLabelValues(family).Inc()
		return
	}
	kind := "partial"
	if result.Full {
		kind = "full"
	}
	syncDuration.WithLabelValues(family, kind).Observe(result.Duration.Seconds())
	lastSuccessfulSync.WithLabelValues(family).SetToCurrentTime()
	topologyHintServices.WithLabelValues(family, "used").Set(float64(result.ServicesUsingHints))
	topologyHintServices.WithLabelValues(family, "ignored").Set(float64(result.ServicesIgnoringHints))
}
