// Package nodeagent runs the datapath on a node: it feeds every Service and EndpointSlice to
// a datapath.Proxier, batching bursts of events into one sync, and reports its health.
package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kube-clusterip/kube-clusterip/datapath"
)

// syncKey is the only request the agent's queue ever holds: every event asks for "sync the
// node", so a burst of events collapses into one queued sync.
var syncKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "datapath-sync"}}

// Options tune the agent.
type Options struct {
	// MinSyncPeriod is the shortest time between two syncs; events inside it are batched.
	MinSyncPeriod time.Duration
	// MaxConsecutiveFailures is how many failed syncs in a row make /healthz fail.
	MaxConsecutiveFailures int
}

// Agent is the reconciler that keeps the node's nftables in step with the cluster.
type Agent struct {
	Client  client.Client
	Proxier *datapath.Proxier
	Options Options

	lastSync time.Time
}

// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// Reconcile hands the current Services and EndpointSlices to the Proxier.
func (a *Agent) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	if wait := a.Options.MinSyncPeriod - time.Since(a.lastSync); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	// The Proxier keeps these objects and never modifies them, so the cache's own copies
	// serve: deep copies of every Service and slice on each sync would dominate at scale.
	var services corev1.ServiceList
	if err := a.Client.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("list services: %w", err)
	}
	var slices discoveryv1.EndpointSliceList
	if err := a.Client.List(ctx, &slices, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("list endpointslices: %w", err)
	}
	svcs := make([]*corev1.Service, 0, len(services.Items))
	for i := range services.Items {
		svcs = append(svcs, &services.Items[i])
	}
	slcs := make([]*discoveryv1.EndpointSlice, 0, len(slices.Items))
	endpoints := 0
	for i := range slices.Items {
		slcs = append(slcs, &slices.Items[i])
		endpoints += len(slices.Items[i].Endpoints)
	}
	a.lastSync = time.Now()
	if err := a.Proxier.Sync(ctx, svcs, slcs); err != nil {
		// The kernel keeps the last good ruleset; the queue retries with backoff.
		return reconcile.Result{}, fmt.Errorf("sync nftables: %w", err)
	}
	servicesProgrammed.Set(float64(len(svcs)))
	endpointsProgrammed.Set(float64(endpoints))
	return reconcile.Result{}, nil
}

// Healthy fails once MaxConsecutiveFailures syncs in a row have failed; use it as a healthz check.
func (a *Agent) Healthy(_ *http.Request) error {
	stats := a.Proxier.Stats()
	if a.Options.MaxConsecutiveFailures > 0 && stats.ConsecutiveFailures >= a.Options.MaxConsecutiveFailures {
		return fmt.Errorf("%d nftables syncs failed in a row, last: %w", stats.ConsecutiveFailures, stats.LastError)
	}
	return nil
}

// SetupWithManager registers the agent, the Proxier's periodic maintenance (outside-flush
// detection, full resyncs) and the health check. Node agents run on every node, so neither
// takes part in leader election.
func (a *Agent) SetupWithManager(mgr ctrl.Manager) error {
	if a.Proxier == nil {
		return errors.New("node agent needs a datapath.Proxier")
	}
	toSync := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{syncKey}
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named("datapath").
		Watches(&corev1.Service{}, toSync).
		Watches(&discoveryv1.EndpointSlice{}, toSync).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1, NeedLeaderElection: ptr.To(false)}).
		Complete(a)
	if err != nil {
		return err
	}
	if err := mgr.Add(maintenance{a.Proxier}); err != nil {
		return err
	}
	return mgr.AddHealthzCheck("datapath", a.Healthy)
}

// maintenance runs the Proxier's periodic work for as long as the manager runs.
type maintenance struct{ proxier *datapath.Proxier }

func (m maintenance) Start(ctx context.Context) error {
	m.proxier.Run(ctx)
	return nil
}

func (maintenance) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = maintenance{}
