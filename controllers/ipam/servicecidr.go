package ipam

import (
	"context"
	"fmt"
	"net/netip"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// serviceCIDRsServed says whether the API server has networking.k8s.io/v1 ServiceCIDRs (v1.33
// and later). Without them the pools' CIDRs are trusted, and the pool "default" is created from
// --default-service-cidr.
func serviceCIDRsServed(mgr ctrl.Manager) bool {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: networkingv1.GroupName, Kind: "ServiceCIDR"}, "v1")
	return err == nil
}

// serviceCIDRsOf converts ServiceCIDR objects for the registry. As kube-apiserver's allocator, it
// takes one without a Ready condition as Ready (kube-controller-manager sets it), and one being
// deleted as not Ready.
func serviceCIDRsOf(objs []networkingv1.ServiceCIDR) []ServiceCIDR {
	out := make([]ServiceCIDR, 0, len(objs))
	for i := range objs {
		obj := &objs[i]
		sc := ServiceCIDR{Name: obj.Name, Ready: obj.DeletionTimestamp.IsZero()}
		if c := meta.FindStatusCondition(obj.Status.Conditions, networkingv1.ServiceCIDRConditionReady); c != nil && c.Status == metav1.ConditionFalse {
			sc.Ready = false
		}
		for _, s := range obj.Spec.CIDRs {
			if p, err := netip.ParsePrefix(s); err == nil {
				sc.CIDRs = append(sc.CIDRs, p.Masked())
			}
		}
		out = append(out, sc)
	}
	return out
}

// listServiceCIDRs reads every ServiceCIDR (from the cache) for the registry.
func listServiceCIDRs(ctx context.Context, c client.Reader) ([]ServiceCIDR, error) {
	list := &networkingv1.ServiceCIDRList{}
	if err := c.List(ctx, list); err != nil {
		return nil, fmt.Errorf("list ServiceCIDRs: %w", err)
	}
	return serviceCIDRsOf(list.Items), nil
}

// serviceCIDRRepair gives the registry the cluster's ServiceCIDRs whenever one changes: the pool
// "default" follows them, and no pool hands out an address the API server would refuse.
type serviceCIDRRepair struct {
	client   client.Reader
	registry *Registry
}

// Reconcile implements reconcile.Reconciler; every request re-reads all ServiceCIDRs.
func (s *serviceCIDRRepair) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	if err := waitReady(ctx, s.registry); err != nil {
		return ctrl.Result{}, err
	}
	cidrs, err := listServiceCIDRs(ctx, s.client)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.registry.SetServiceCIDRs(cidrs)
	return ctrl.Result{}, nil
}
