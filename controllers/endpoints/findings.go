package endpoints

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// Reasons of the Warning Events that point users at the two most common reasons a Service
// has no endpoints (the same checks `kube-clusterip diagnose` runs).
const (
	ReasonSelectorMatchesNoPod = "SelectorMatchesNoPod"
	ReasonTargetPortUnresolved = "TargetPortUnresolved"
)

// findingReporter records those Warning Events on a Service while the problem lasts, once
// per distinct message, and deletes them when it is fixed, so that `kubectl describe
// service` shows only what is still wrong.
type findingReporter struct {
	recorder events.EventRecorder
	// apiReader lists Events (not cached) to delete the ones of a fixed problem.
	apiReader client.Reader
	writer    client.Writer

	mu     sync.Mutex
	active map[types.NamespacedName]map[string]finding // Service -> reason -> finding
}

// finding is one problem of a Service. related is the object it is about, if any (the pod
// one label away from the selector).
type finding struct {
	message string
	related *corev1.Pod
}

func newFindingReporter(recorder events.EventRecorder, apiReader client.Reader, writer client.Writer) *findingReporter {
	return &findingReporter{recorder: recorder, apiReader: apiReader, writer: writer,
		active: map[types.NamespacedName]map[string]finding{}}
}

// serviceFindings runs the checks: a selector that matches no pod of the namespace (naming
// the closest near miss), or named targetPorts the selected pods do not declare.
func serviceFindings(svc *corev1.Service, selected []*corev1.Pod, podsInNamespace func() []*corev1.Pod) map[string]finding {
	found := map[string]finding{}
	if len(selected) == 0 {
		pods := podsInNamespace()
		if msg, ok := endpointrules.SelectorMatchesNoPod(svc, pods); ok {
			f := finding{message: msg}
			if misses := endpointrules.NearMisses(svc, pods); len(misses) > 0 {
				f.related = misses[0].Pod
			}
			found[ReasonSelectorMatchesNoPod] = f
		}
	} else if msg, ok := endpointrules.TargetPortUnresolved(svc, selected); ok {
		found[ReasonTargetPortUnresolved] = finding{message: msg}
	}
	return found
}

// report records new findings and clears the Events of those that are gone.
func (f *findingReporter) report(ctx context.Context, svc *corev1.Service, found map[string]finding) {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	f.mu.Lock()
	before := f.active[key]
	if len(found) == 0 {
		delete(f.active, key)
	} else {
		f.active[key] = found
	}
	f.mu.Unlock()
	for reason, now := range found {
		if before[reason].message != now.message {
			var related runtime.Object
			if now.related != nil {
				related = now.related
			}
			f.recorder.Eventf(svc, related, corev1.EventTypeWarning, reason, "SyncEndpoints", "%s", now.message)
		}
	}
	for reason := range before {
		if _, still := found[reason]; !still {
			f.clear(ctx, svc, reason)
		}
	}
}

// servicesMatchingNoPod lists the namespace's Services whose selector matched no pod.
func (f *findingReporter) servicesMatchingNoPod(namespace string) []types.NamespacedName {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []types.NamespacedName
	for key, found := range f.active {
		if _, ok := found[ReasonSelectorMatchesNoPod]; ok && key.Namespace == namespace {
			keys = append(keys, key)
		}
	}
	return keys
}

// forget drops what is known of a deleted Service (its Events go with it).
func (f *findingReporter) forget(key types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.active, key)
}

// clear deletes the Service's Events of a fixed problem.
func (f *findingReporter) clear(ctx context.Context, svc *corev1.Service, reason string) {
	var list eventsv1.EventList
	err := f.apiReader.List(ctx, &list, client.InNamespace(svc.Namespace),
		client.MatchingFields{"regarding.uid": string(svc.UID), "reason": reason})
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list the Events of a fixed problem", "reason", reason)
		return
	}
	for i := range list.Items {
		if err := f.writer.Delete(ctx, &list.Items[i]); client.IgnoreNotFound(err) != nil {
			ctrl.LoggerFrom(ctx).Error(fmt.Errorf("delete Event %s: %w", list.Items[i].Name, err), "clear a fixed problem")
		}
	}
}
