package ipam

import (
	"context"
	"fmt"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// ipAddressParentIndex indexes IPAddress objects by the Service they belong to ("ns/name").
const ipAddressParentIndex = "ipam.clusterip.dev/ipaddress-parent"

// ipAddressRetry is how soon a deleted Service's release is retried while the API server
// still holds its IPAddress objects (their deletion also wakes the Service up).
const ipAddressRetry = time.Second

// ipAddressesTracked says whether the API server records ClusterIPs as networking.k8s.io/v1
// IPAddress objects (v1.33 and later). Where it does, a deleted Service's address is released
// only once its IPAddress is gone: the API server deletes that object after the Service, and
// handing the address out before then gets the next Service refused with "provided IP is
// already allocated".
func ipAddressesTracked(mgr ctrl.Manager) bool {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: networkingv1.GroupName, Kind: "IPAddress"}, "v1")
	return err == nil
}

// indexIPAddressParents registers the index from IPAddress to its Service.
func indexIPAddressParents(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &networkingv1.IPAddress{}, ipAddressParentIndex, func(obj client.Object) []string {
		if key, ok := ipAddressParent(obj.(*networkingv1.IPAddress)); ok {
			return []string{key.String()}
		}
		return nil
	})
}

func ipAddressParent(ip *networkingv1.IPAddress) (types.NamespacedName, bool) {
	ref := ip.Spec.ParentRef
	if ref == nil || ref.Group != "" || ref.Resource != "services" {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, true
}

// ipAddressToService wakes the Service an IPAddress belongs to, so that its deletion
// completes a pending release.
var ipAddressToService = handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
	if key, ok := ipAddressParent(obj.(*networkingv1.IPAddress)); ok {
		return []reconcile.Request{{NamespacedName: key}}
	}
	return nil
})

// serviceStillHoldsIPAddresses says whether the API server still has IPAddress objects of the
// (deleted) Service.
func serviceStillHoldsIPAddresses(ctx context.Context, c client.Reader, key types.NamespacedName) (bool, error) {
	var list networkingv1.IPAddressList
	if err := c.List(ctx, &list, client.MatchingFields{ipAddressParentIndex: key.String()}); err != nil {
		return false, fmt.Errorf("list IPAddresses of Service %s: %w", key, err)
	}
	return len(list.Items) > 0, nil
}
