package nodeagent

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// ToBeDeletedTaint is the taint the cluster autoscaler puts on a Node it is about to
// delete; load balancers should stop sending new connections to it.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// DefaultProxyHealthTimeout is how long a queued update may wait for its sync before the
// proxy counts as unhealthy: kube-proxy's twice its 30s sync period.
const DefaultProxyHealthTimeout = 60 * time.Second

// ProxyHealth answers load balancers and kubelet the way kube-proxy's health server (port
// 10256) does: /livez fails when an update has waited longer than the timeout for a
// successful sync; /healthz fails then too, and also while this node's Node is unknown,
// being deleted, or tainted ToBeDeletedByClusterAutoscaler, so that load balancers drain
// the node first.
type ProxyHealth struct {
	clock   clock.PassiveClock
	timeout time.Duration

	mu           sync.Mutex
	lastUpdated  time.Time
	oldestQueued time.Time // zero: no update waits
	nodeEligible bool
}

// NewProxyHealth returns a ProxyHealth reading time from c (clock.RealClock{} in production).
func NewProxyHealth(c clock.PassiveClock, timeout time.Duration) *ProxyHealth {
	return &ProxyHealth{clock: c, timeout: timeout}
}

// QueuedUpdate records that a change waits for a sync; only the oldest waiting one counts.
func (h *ProxyHealth) QueuedUpdate() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.oldestQueued.IsZero() {
		h.oldestQueued = h.clock.Now()
	}
}

// Updated records a successful sync of everything queued before it.
func (h *ProxyHealth) Updated() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.oldestQueued = time.Time{}
	h.lastUpdated = h.clock.Now()
}

// SetNode records this node's Node (nil: not found).
func (h *ProxyHealth) SetNode(node *corev1.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeEligible = NodeEligible(node)
}

// NodeEligible tells whether load balancers may send new traffic to node: it exists, is
// not being deleted, and is not tainted ToBeDeletedByClusterAutoscaler.
func NodeEligible(node *corev1.Node) bool {
	if node == nil || node.DeletionTimestamp != nil {
		return false
	}
	for _, t := range node.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// Healthy tells whether no update has waited longer than the timeout.
func (h *ProxyHealth) Healthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthyLocked(h.clock.Now())
}

// healthyLocked: healthy while starting up (no sync loop yet, as kube-proxy) and while
// the oldest queued update is younger than the timeout.
func (h *ProxyHealth) healthyLocked(now time.Time) bool {
	return h.lastUpdated.IsZero() || h.oldestQueued.IsZero() || now.Sub(h.oldestQueued) < h.timeout
}

// proxyHealthBody is kube-proxy's JSON answer. One sync of ours programs both families, so
// both have its time and health in status (kube-proxy has a proxier per family).
type proxyHealthBody struct {
	LastUpdated  time.Time                            `json:"lastUpdated"`
	CurrentTime  time.Time                            `json:"currentTime"`
	NodeEligible *bool                                `json:"nodeEligible,omitempty"`
	Healthy      bool                                 `json:"healthy"`
	Status       map[corev1.IPFamily]familyHealthBody `json:"status,omitempty"`
}

type familyHealthBody struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// Handler serves /healthz and /livez.
func (h *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { h.answer(w, true) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { h.answer(w, false) })
	return mux
}

func (h *ProxyHealth) answer(w http.ResponseWriter, withNode bool) {
	h.mu.Lock()
	now := h.clock.Now()
	body := proxyHealthBody{LastUpdated: h.lastUpdated, CurrentTime: now, Healthy: h.healthyLocked(now)}
	if !h.lastUpdated.IsZero() { // as kube-proxy: a family is listed once it has synced
		family := familyHealthBody{LastUpdated: h.lastUpdated, Healthy: body.Healthy}
		body.Status = map[corev1.IPFamily]familyHealthBody{corev1.IPv4Protocol: family, corev1.IPv6Protocol: family}
	}
	ok := body.Healthy
	if withNode {
		eligible := h.nodeEligible
		body.NodeEligible, ok = &eligible, ok && eligible
	}
	h.mu.Unlock()
	code := "503"
	if ok {
		code = "200"
		// As kube-proxy: a healthy answer reports the current time as lastUpdated, which old
		// clients read as "the sync loop is running".
		body.LastUpdated = now
	}
	if withNode {
		proxyHealthzTotal.WithLabelValues(code).Inc()
	} else {
		proxyLivezTotal.WithLabelValues(code).Inc()
	}
	out, _ := json.Marshal(body)
	writeJSON(w, ok, out)
}

// writeJSON answers 200 when ok, else 503, with body, JSON, as kube-proxy answers: its bytes
// alone, no newline after them.
func writeJSON(w http.ResponseWriter, ok bool, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(body)
}
