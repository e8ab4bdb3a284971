package ipam

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// ipAddressOf is the API server's record of ip for Service parent (nil: no parent).
func ipAddressOf(ip string, parent *corev1.Service) *networkingv1.IPAddress {
	obj := &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: ip}}
	if parent != nil {
		obj.Spec.ParentRef = &networkingv1.ParentReference{Resource: "services", Namespace: parent.Namespace, Name: parent.Name}
	}
	return obj
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// A deleted Service's address goes back to its pool only once the API server has no IPAddress
// of that Service for it: its cache may not have seen the IPAddress yet, so the read is live.
func TestDeletedServiceReleasedOnlyWithoutItsIPAddress(t *testing.T) {
	gone := service("ns", "gone")
	for _, tc := range []struct {
		name        string
		objects     []client.Object
		wantHeld    bool
		wantRequeue bool
	}{
		{name: "no IPAddress: released", wantHeld: false},
		{name: "its IPAddress still there: kept, retried", objects: []client.Object{ipAddressOf("10.96.0.3", gone)}, wantHeld: true, wantRequeue: true},
		{name: "IPAddress of a new holder: released", objects: []client.Object{ipAddressOf("10.96.0.3", service("ns", "other"))}, wantHeld: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			registry, _ := newTestRegistry(t)
			registry.MarkReady()
			registry.Observe(key("ns", "gone"), ips("10.96.0.3"), noLabel)
			live := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(tc.objects...).Build()
			cache := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build() // has seen nothing
			repair := &serviceRepair{client: cache, apiReader: live, registry: registry, ipAddresses: true}
			res, err := repair.Reconcile(context.Background(), ctrl.Request{NamespacedName: key("ns", "gone")})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.RequeueAfter > 0; got != tc.wantRequeue {
				t.Errorf("requeue = %v, want %v", got, tc.wantRequeue)
			}
			if _, held := registry.HolderOf(ips("10.96.0.3")[0]); held != tc.wantHeld {
				t.Errorf("held = %v, want %v", held, tc.wantHeld)
			}
		})
	}
}

// A webhook reservation whose Service has not appeared is kept while the API server has an
// IPAddress for the address (the create is still in flight), whoever its parent is.
func TestExpiredReservationKeptWhileAnIPAddressExists(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parent   *corev1.Service // of the API server's IPAddress for the reserved address
		noRecord bool            // the API server has no IPAddress for it
		wantKept bool
	}{
		{name: "no Service, no IPAddress: dropped", noRecord: true},
		{name: "IPAddress of the Service being created: kept", parent: service("ns", "new"), wantKept: true},
		{name: "IPAddress without a parent: kept", wantKept: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			registry, clock := newTestRegistry(t)
			got, err := registry.Assign(AssignRequest{Service: key("ns", "new"), NamespaceLabels: noLabel})
			if err != nil {
				t.Fatal(err)
			}
			clock.t = clock.t.Add(2 * registry.grace)
			builder := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme)
			if !tc.noRecord {
				builder = builder.WithObjects(ipAddressOf(got[0].String(), tc.parent))
			}
			expiry := &reservationExpiry{apiReader: builder.Build(), registry: registry, ipAddresses: true}
			expiry.expire(context.Background())
			if kept := registry.Pending() == 1; kept != tc.wantKept {
				t.Errorf("reservation of %v kept = %v, want %v", got, kept, tc.wantKept)
			}
			if tc.wantKept {
				return
			}
			if _, err := registry.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: got}); err != nil {
				t.Errorf("after the drop, %v is not free: %v", got, err)
			}
		})
	}
}
