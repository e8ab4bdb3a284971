package endpoints

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
)

// Reasons of the Events topology-mode Auto records on a Service (upstream's).
const (
	ReasonTopologyAwareHintsEnabled  = "TopologyAwareHintsEnabled"
	ReasonTopologyAwareHintsDisabled = "TopologyAwareHintsDisabled"
)

// hintEventReporter records what topology-mode Auto made of a Service, per address type: a
// Normal Event when hints are set where they were not, a Warning with the reason when they are
// refused (once per distinct reason, where upstream repeats it on every sync), and a Warning
// when the annotation goes away while hints were set.
type hintEventReporter struct {
	recorder events.EventRecorder

	mu   sync.Mutex
	last map[types.NamespacedName]map[discoveryv1.AddressType]string // "" = hints set
}

func newHintEventReporter(recorder events.EventRecorder) *hintEventReporter {
	return &hintEventReporter{recorder: recorder, last: map[types.NamespacedName]map[discoveryv1.AddressType]string{}}
}

// report records outcome (from SetTopologyAwareHints; nil when the Service does not use
// topology-mode Auto).
func (h *hintEventReporter) report(svc *corev1.Service, outcome map[discoveryv1.AddressType]string) {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	h.mu.Lock()
	before, known := h.last[key]
	if outcome == nil {
		delete(h.last, key)
	} else {
		h.last[key] = outcome
	}
	h.mu.Unlock()
	for addressType, refusal := range outcome {
		previous, seen := before[addressType]
		switch {
		case seen && previous == refusal:
		case refusal == "":
			h.event(svc, corev1.EventTypeNormal, ReasonTopologyAwareHintsEnabled, HintsEnabled, addressType)
		default:
			h.event(svc, corev1.EventTypeWarning, ReasonTopologyAwareHintsDisabled, refusal, addressType)
		}
	}
	if outcome == nil && known {
		for addressType, refusal := range before {
			if refusal == "" {
				h.event(svc, corev1.EventTypeWarning, ReasonTopologyAwareHintsDisabled, HintsDisabled, addressType)
			}
		}
	}
}

func (h *hintEventReporter) event(svc *corev1.Service, eventType, reason, message string, addressType discoveryv1.AddressType) {
	h.recorder.Eventf(svc, nil, eventType, reason, "TopologyAwareHints", "%s", fmt.Sprintf("%s, addressType: %s", message, addressType))
}

func (h *hintEventReporter) forget(key types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.last, key)
}
