package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// ipAddressRetry is how soon a deleted Service's release is retried while the API server
// still holds its IPAddress objects (their deletion also wakes the Service up).
const ipAddressRetry = time.Second

// ipAddressesTracked says whether the API server records ClusterIPs as networking.k8s.io/v1
// IPAddress objects (v1.33 and later). Where it does, a deleted Service's address is released
// only once its IPAddress is gone, and a webhook reservation is dropped only while no IPAddress
// has the address: the API server creates that object before it stores the Service (and after
// our mutating webhook answered) and deletes it after the Service; handing the address out while
// it exists gets the next Service refused with "provided IP is already allocated".
func ipAddressesTracked(mgr ctrl.Manager) bool {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: networkingv1.GroupName, Kind: "IPAddress"}, "v1")
	return err == nil
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

// apiServerHolds says whether the API server has an IPAddress object for ip, read live (the
// cache may not have seen its creation yet): while it has, handing ip out again gets the next
// Service refused. With a non-nil parent, only an IPAddress of that Service counts.
func apiServerHolds(ctx context.Context, c client.Reader, ip netip.Addr, parent *types.NamespacedName) (bool, error) {
	obj := &networkingv1.IPAddress{}
	if err := c.Get(ctx, types.NamespacedName{Name: ip.String()}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("read IPAddress %s: %w", ip, err)
	}
	if parent == nil {
		return true, nil
	}
	key, ok := ipAddressParent(obj)
	return ok && key == *parent, nil
}
