package endpoints

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/events"
)

func TestHintEventReporter(t *testing.T) {
	recorder := events.NewFakeRecorder(10)
	h := newHintEventReporter(recorder)
	svc := service()
	ipv4 := func(refusal string) map[discoveryv1.AddressType]string {
		return map[discoveryv1.AddressType]string{discoveryv1.AddressTypeIPv4: refusal}
	}
	steps := []struct {
		name    string
		outcome map[discoveryv1.AddressType]string
		want    string // the Event recorded, "" for none
	}{
		{name: "hints set where there were none: Normal Event", outcome: ipv4(""),
			want: corev1.EventTypeNormal + " " + ReasonTopologyAwareHintsEnabled + " " + HintsEnabled + ", addressType: IPv4"},
		{name: "hints still set: nothing", outcome: ipv4("")},
		{name: "refused: Warning with the reason", outcome: ipv4(HintsNodesReadyInOneZoneOnly),
			want: corev1.EventTypeWarning + " " + ReasonTopologyAwareHintsDisabled + " " + HintsNodesReadyInOneZoneOnly + ", addressType: IPv4"},
		{name: "refused for the same reason again: nothing", outcome: ipv4(HintsNodesReadyInOneZoneOnly)},
		{name: "hints set again: Normal Event", outcome: ipv4(""),
			want: corev1.EventTypeNormal + " " + ReasonTopologyAwareHintsEnabled + " " + HintsEnabled + ", addressType: IPv4"},
		{name: "the annotation goes away while hints are set: Warning", outcome: nil,
			want: corev1.EventTypeWarning + " " + ReasonTopologyAwareHintsDisabled + " " + HintsDisabled + ", addressType: IPv4"},
		{name: "no annotation, nothing before: nothing", outcome: nil},
	}
	for _, step := range steps {
		h.report(svc, step.outcome)
		got := ""
		select {
		case got = <-recorder.Events:
		default:
		}
		if !strings.HasPrefix(got, step.want) || (step.want == "") != (got == "") {
			t.Errorf("%s: event %q, want %q", step.name, got, step.want)
		}
	}
}
