package nodeagent

import (
	"context"
	"fmt"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// serviceCIDRReconciler gives the Proxier the ranges of every ServiceCIDR object, so that
// unallocated addresses of a range added at run time are dropped without a restart.
type serviceCIDRReconciler struct{ agent *Agent }

// ServiceCIDRsOf lists the CIDRs of the ServiceCIDR objects, or fallback when there are
// none (a cluster that has not created them yet).
func ServiceCIDRsOf(objects []networkingv1.ServiceCIDR, fallback []string) []string {
	var cidrs []string
	for _, o := range objects {
		for _, c := range o.Spec.CIDRs {
			if !slices.Contains(cidrs, c) {
				cidrs = append(cidrs, c)
			}
		}
	}
	if len(cidrs) == 0 {
		return fallback
	}
	slices.Sort(cidrs)
	return cidrs
}

func (r serviceCIDRReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var list networkingv1.ServiceCIDRList
	if err := r.agent.Client.List(ctx, &list); err != nil {
		return reconcile.Result{}, fmt.Errorf("list servicecidrs: %w", err)
	}
	cidrs := ServiceCIDRsOf(list.Items, r.agent.FallbackServiceCIDRs)
	if r.agent.Proxier.SetServiceCIDRs(cidrs) {
		log.FromContext(ctx).Info("Service CIDRs changed; unallocated addresses in them are dropped", "cidrs", cidrs)
		r.agent.requestApply()
	}
	return reconcile.Result{}, nil
}

// setupServiceCIDRs watches ServiceCIDRs when the API server serves them; otherwise the
// fallback CIDRs stay.
func (a *Agent) setupServiceCIDRs(mgr ctrl.Manager) error {
	gk := schema.GroupKind{Group: networkingv1.GroupName, Kind: "ServiceCIDR"}
	if _, err := mgr.GetRESTMapper().RESTMapping(gk, networkingv1.SchemeGroupVersion.Version); err != nil {
		mgr.GetLogger().Info("the API server has no networking.k8s.io/v1 ServiceCIDRs; using --service-cluster-ip-range", "error", err.Error())
		return nil
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("datapath-service-cidrs").
		Watches(&networkingv1.ServiceCIDR{}, handler.EnqueueRequestsFromMapFunc(
			func(context.Context, client.Object) []reconcile.Request { return []reconcile.Request{{}} })).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false)}).
		Complete(serviceCIDRReconciler{agent: a})
}
