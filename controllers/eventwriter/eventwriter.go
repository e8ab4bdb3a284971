// Package eventwriter records events.k8s.io/v1 Events one object per call.
//
// client-go's events recorder folds every Event whose type, reason, action, reporter, regarding
// and related objects match an earlier one (for six minutes) into that Event's series: the count
// grows, the note stays the first one's. For a control loop that records a finding only when it
// changes, that hides the change: a Service whose hints were removed for "insufficient number of
// endpoints" and then because "nodes only ready in one zone" would show the first reason only.
// kube-controller-manager's core/v1 Events keep one object per distinct message; so does this
// writer. Its callers record on change, so nothing here floods the API server.
package eventwriter

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Limits of events.k8s.io/v1 validation.
const (
	maxNoteBytes     = 1024
	maxInstanceBytes = 128
)

// writeTimeout bounds one Event's create; Events are best effort, as client-go's are.
const writeTimeout = 10 * time.Second

// Recorder creates one Event per Eventf call, in the background.
type Recorder struct {
	client     client.Writer
	scheme     *runtime.Scheme
	controller string // reportingController
	instance   string // reportingInstance: controller and host, as client-go names it
	now        func() time.Time
}

// New returns a Recorder reporting as controller (a qualified name, like client-go's).
func New(c client.Writer, scheme *runtime.Scheme, controller string) *Recorder {
	host, _ := os.Hostname()
	instance := controller + "-" + host
	if len(instance) > maxInstanceBytes {
		instance = instance[:maxInstanceBytes]
	}
	return &Recorder{client: c, scheme: scheme, controller: controller, instance: instance, now: time.Now}
}

// Eventf implements k8s.io/client-go/tools/events.EventRecorder.
func (r *Recorder) Eventf(regarding, related runtime.Object, eventType, reason, action, note string, args ...any) {
	event, err := r.event(regarding, related, eventType, reason, action, fmt.Sprintf(note, args...))
	if err != nil {
		logf.Log.WithName("events").Error(err, "Could not record an Event", "reason", reason)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		defer cancel()
		if err := r.client.Create(ctx, event); err != nil {
			logf.Log.WithName("events").Error(err, "Could not record an Event", "reason", reason, "regarding", event.Regarding.Name)
		}
	}()
}

// event builds the Event as client-go's recorder would, minus the series.
func (r *Recorder) event(regarding, related runtime.Object, eventType, reason, action, note string) (*eventsv1.Event, error) {
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		return nil, fmt.Errorf("reference the Event's object: %w", err)
	}
	var relatedRef *corev1.ObjectReference
	if related != nil {
		if relatedRef, err = reference.GetReference(r.scheme, related); err != nil {
			return nil, fmt.Errorf("reference the Event's related object: %w", err)
		}
	}
	if len(note) > maxNoteBytes {
		note = strings.ToValidUTF8(note[:maxNoteBytes], "")
	}
	namespace := ref.Namespace
	if namespace == "" { // cluster-scoped objects' Events live in default, as client-go puts them
		namespace = metav1.NamespaceDefault
	}
	now := r.now()
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()),
			Namespace: namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Related:             relatedRef,
		Note:                note,
		Type:                eventType,
	}, nil
}
