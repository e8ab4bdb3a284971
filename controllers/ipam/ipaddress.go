package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ipAddressesTracked says whether the API server records ClusterIPs as networking.k8s.io/v1
// IPAddress objects (v1.33 and later). Where it does, an address is handed out only while no
// IPAddress object exists for it: the API server creates that object before it stores a
// Service (after our mutating webhook answered) and deletes it after the Service, and it refuses
// a Service whose address has one ("provided IP is already allocated").
func ipAddressesTracked(mgr ctrl.Manager) bool {
	_, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: networkingv1.GroupName, Kind: "IPAddress"}, "v1")
	return err == nil
}

// ipAddressParent returns the Service an IPAddress names as its parent; the zero name when it
// names none or something else.
func ipAddressParent(ip *networkingv1.IPAddress) types.NamespacedName {
	ref := ip.Spec.ParentRef
	if ref == nil || ref.Group != "" || ref.Resource != "services" {
		return types.NamespacedName{}
	}
	return types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
}

// ipAddressParentText names an IPAddress's parent Service in a message.
func ipAddressParentText(parent types.NamespacedName) string {
	if parent.Name == "" {
		return ""
	}
	return " for Service " + parent.String()
}

// liveIPAddress reads the API server's IPAddress object for ip, bypassing any cache (which may
// not have seen its creation or deletion yet): whether it exists, and the Service it names.
func liveIPAddress(ctx context.Context, c client.Reader, ip netip.Addr) (types.NamespacedName, bool, error) {
	obj := &networkingv1.IPAddress{}
	if err := c.Get(ctx, types.NamespacedName{Name: ip.String()}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return types.NamespacedName{}, false, nil
		}
		return types.NamespacedName{}, false, fmt.Errorf("read IPAddress %s: %w", ip, err)
	}
	return ipAddressParent(obj), true, nil
}

// ipAddressMirror feeds the registry the API server's IPAddress objects, whatever their parent
// (one that kube-apiserver's repair loop re-creates for a Service already gone holds its address
// as firmly as a live Service's), event by event and in order: a deletion carries the object's
// parent, which ends that Service's reservation even when the Service came and went unseen.
type ipAddressMirror struct {
	informers    ctrlcache.Informers
	registry     *Registry
	registration toolscache.ResourceEventHandlerRegistration
}

// sync registers the event handler (once) and waits until it has delivered every existing object.
func (m *ipAddressMirror) sync(ctx context.Context) error {
	if m.registration == nil {
		informer, err := m.informers.GetInformer(ctx, &networkingv1.IPAddress{})
		if err != nil {
			return fmt.Errorf("watch IPAddresses: %w", err)
		}
		m.registration, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { m.observe(obj, true) },
			UpdateFunc: func(_, obj any) { m.observe(obj, true) },
			DeleteFunc: func(obj any) { m.observe(obj, false) },
		})
		if err != nil {
			return fmt.Errorf("watch IPAddresses: %w", err)
		}
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), m.registration.HasSynced) {
		return fmt.Errorf("watch IPAddresses: %w", ctx.Err())
	}
	return nil
}

func (m *ipAddressMirror) observe(obj any, exists bool) {
	if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	record, ok := obj.(*networkingv1.IPAddress)
	if !ok {
		return
	}
	ip, err := netip.ParseAddr(record.Name)
	if err != nil {
		return // the API server names IPAddresses by their canonical address
	}
	if exists {
		m.registry.ObserveIPAddress(ip.Unmap(), ipAddressParent(record), record.UID)
	} else {
		m.registry.IPAddressGone(ip.Unmap(), ipAddressParent(record), record.UID)
	}
}

// maxTakenCandidates bounds how many dynamic addresses one admission may find taken by an
// IPAddress object the caches have not shown yet, before it gives up (and, by failurePolicy,
// the API server decides).
const maxTakenCandidates = 8

// maxStaleHolds bounds how many stale holds one admission forgets (a record, a late view of its
// Service, for each requested address).
const maxStaleHolds = 4

// assignFree is Registry.Assign with the API server's IPAddress objects as the last word, as
// kube-apiserver's own allocator has them: a requested address our caches still show held is
// granted when its IPAddress is gone (read live), and a dynamic address is handed out only when
// no IPAddress exists for it.
func (a *serviceAdmission) assignFree(ctx context.Context, req AssignRequest) ([]netip.Addr, error) {
	for taken := 0; ; {
		var ips []netip.Addr
		err := a.grantFreed(ctx, req.Service, func() error {
			var err error
			ips, err = a.registry.Assign(req)
			if errors.Is(err, allocator.ErrFull) && a.reclaim != nil {
				if rerr := a.reclaim(ctx); rerr != nil {
					return fmt.Errorf("%w. It may only look full: %w; retry the create", err, rerr)
				}
				ips, err = a.registry.Assign(req)
			}
			return err
		})
		if err != nil || !a.ipAddresses || req.DryRun {
			return ips, err
		}
		dynamic := ips[len(req.Requested):]
		free := true
		for _, ip := range a.registry.Unchecked(req.Service, dynamic) { // stashed ones were read already
			parent, exists, err := liveIPAddress(ctx, a.live, ip)
			if err != nil {
				a.registry.CancelReservations(req.Service, dynamic)
				return nil, unreachable(ip, err)
			}
			if exists {
				a.registry.YieldReservation(req.Service, ip, parent)
				free = false
			}
		}
		if free {
			return ips, nil
		}
		a.registry.CancelReservations(req.Service, dynamic)
		if taken++; taken == maxTakenCandidates {
			return nil, fmt.Errorf("%d free addresses in a row turned out to have IPAddress objects the cache has not shown yet; retry the create", taken)
		}
	}
}

// grantFreed runs try for Service self; when try is refused because a Service or an IPAddress
// object our caches know holds a requested address, it reads that address's IPAddress live, and
// if the API server has none (it deletes the object before a Service's delete returns) or has
// given it to self (kube-apiserver creates the IPAddress before it calls validating webhooks),
// it forgets the stale hold and runs try again: kube-apiserver grants the address at once too.
func (a *serviceAdmission) grantFreed(ctx context.Context, self types.NamespacedName, try func() error) error {
	for forgotten := 0; ; forgotten++ {
		err := try()
		var ae *AdmissionError
		if !a.ipAddresses || !errors.As(err, &ae) || !ae.Held.IsValid() {
			return err
		}
		parent, exists, lerr := liveIPAddress(ctx, a.live, ae.Held)
		if lerr != nil {
			return unreachable(ae.Held, lerr)
		}
		if (exists && parent != self) || forgotten == maxStaleHolds || !a.registry.ForgetStaleHold(ae.Held) {
			return err
		}
	}
}

// unreachable says that the check of ip's IPAddress failed: this replica may not reach the API
// server, and hands out nothing it cannot check.
func unreachable(ip netip.Addr, err error) error {
	return fmt.Errorf("this webhook replica could not check that the API server has no IPAddress for %s (%w); "+
		"it hands out no address it cannot check: retry the request; if it persists, check the replica's connection to the API server", ip, err)
}

// apiServerReachable is a readyz check: a replica that cannot read from the API server leaves the
// webhook Service's endpoints, so that the API server calls the replicas that can.
func apiServerReachable(live client.Reader) func(*http.Request) error {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), apiServerCheckTimeout)
		defer cancel()
		if err := live.List(ctx, &networkingv1.IPAddressList{}, client.Limit(1)); err != nil {
			return fmt.Errorf("cannot read IPAddresses from the API server: %w", err)
		}
		return nil
	}
}

// apiServerCheckTimeout bounds the readyz check's read.
const apiServerCheckTimeout = 3 * time.Second
