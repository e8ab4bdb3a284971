package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
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

// An address is never handed out while the API server has an IPAddress object for it, whatever
// the object names as its parent, and is free again as soon as nothing holds it.
func TestIPAddressObjectsHoldTheirAddresses(t *testing.T) {
	gone, other := key("ns", "gone"), key("ns", "other")
	for _, tc := range []struct {
		name string
		// steps run on a registry where Service ns/gone holds 10.96.0.3
		steps    func(r *Registry, ip netip.Addr)
		wantFree bool
	}{
		{name: "Service gone, its IPAddress not yet: held", steps: func(r *Registry, ip netip.Addr) {
			r.ObserveIPAddress(ip, gone, "")
			r.Observe(gone, nil, nil)
		}},
		{name: "Service and its IPAddress gone: free", wantFree: true, steps: func(r *Registry, ip netip.Addr) {
			r.ObserveIPAddress(ip, gone, "")
			r.Observe(gone, nil, nil)
			r.IPAddressGone(ip, types.NamespacedName{}, "")
		}},
		{name: "IPAddress gone first, then the Service: free", wantFree: true, steps: func(r *Registry, ip netip.Addr) {
			r.ObserveIPAddress(ip, gone, "")
			r.IPAddressGone(ip, types.NamespacedName{}, "")
			r.Observe(gone, nil, nil)
		}},
		{name: "IPAddress re-created for the Service after it was gone (kube-apiserver's repair loop): held", steps: func(r *Registry, ip netip.Addr) {
			r.Observe(gone, nil, nil)
			r.ObserveIPAddress(ip, gone, "")
		}},
		{name: "IPAddress naming another Service: held", steps: func(r *Registry, ip netip.Addr) {
			r.Observe(gone, nil, nil)
			r.ObserveIPAddress(ip, other, "")
		}},
		{name: "IPAddress naming no parent: held", steps: func(r *Registry, ip netip.Addr) {
			r.Observe(gone, nil, nil)
			r.ObserveIPAddress(ip, types.NamespacedName{}, "")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			ip := ips("10.96.0.3")[0]
			r.Observe(gone, []netip.Addr{ip}, noLabel)
			tc.steps(r, ip)
			_, err := r.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: []netip.Addr{ip}})
			if free := err == nil; free != tc.wantFree {
				t.Fatalf("requested %s: err %v, want free = %v", ip, err, tc.wantFree)
			}
			if err != nil {
				var ae *AdmissionError
				if !errors.As(err, &ae) || ae.Held != ip || !errors.Is(err, allocator.ErrAllocated) {
					t.Fatalf("refusal %v: want ErrAllocated with Held = %s, so that a live read can overrule it", err, ip)
				}
			}
			if !tc.wantFree && takesAddress(t, r, ip) {
				t.Fatalf("a dynamic allocation got %s", ip)
			}
		})
	}
}

// takesAddress fills the default pool's free addresses and says whether ip was among them.
func takesAddress(t *testing.T, r *Registry, ip netip.Addr) bool {
	t.Helper()
	for i := 0; ; i++ {
		got, err := r.Assign(AssignRequest{Service: key("fill", fmt.Sprint(i)), NamespaceLabels: noLabel})
		if errors.Is(err, allocator.ErrFull) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if got[0] == ip {
			return true
		}
	}
}

// A webhook reservation ends when the IPAddress object of its Service shows up; the address is
// free again when that object goes, even if the Service was never seen (created and deleted at
// once), without waiting for the reservation's grace period.
func TestReservationEndsWithItsIPAddress(t *testing.T) {
	r, _ := newTestRegistry(t)
	got, err := r.Assign(AssignRequest{Service: key("ns", "short"), NamespaceLabels: noLabel})
	if err != nil {
		t.Fatal(err)
	}
	r.ObserveIPAddress(got[0], key("ns", "someone-else"), "")
	if r.Pending() != 1 {
		t.Fatalf("pending = %d after an IPAddress of another Service: want the reservation kept", r.Pending())
	}
	r.IPAddressGone(got[0], types.NamespacedName{}, "")
	r.ObserveIPAddress(got[0], key("ns", "short"), "")
	if r.Pending() != 0 {
		t.Fatalf("pending = %d after the Service's own IPAddress appeared, want 0", r.Pending())
	}
	// kube-apiserver creates the IPAddress before it calls the validating webhook.
	if err := r.Validate(key("ns", "short"), got, nil, noLabel, false); err != nil {
		t.Fatalf("validating the Service whose IPAddress exists: %v", err)
	}
	if _, err := r.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: got}); err == nil {
		t.Fatalf("%s handed out while its IPAddress exists", got[0])
	}
	r.IPAddressGone(got[0], types.NamespacedName{}, "")
	if _, err := r.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: got}); err != nil {
		t.Fatalf("%s not free once its IPAddress is gone: %v", got[0], err)
	}
}

// A Service created and deleted before the repair loop saw it: its IPAddress came and went, and
// its address is free at once.
func TestQuickCreateAndDeleteFreesTheAddressAtOnce(t *testing.T) {
	r, _ := newTestRegistry(t)
	got, err := r.Assign(AssignRequest{Service: key("ns", "short"), NamespaceLabels: noLabel})
	if err != nil {
		t.Fatal(err)
	}
	r.IPAddressGone(got[0], key("ns", "short"), "") // add and delete of the object, seen as its deletion
	if r.Pending() != 0 {
		t.Fatalf("pending = %d, want the reservation ended with its IPAddress", r.Pending())
	}
	if _, err := r.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: got}); err != nil {
		t.Fatalf("%s not free: %v", got[0], err)
	}
}

// A requested address granted over a stale view stays granted when that view of the deleted
// Service arrives late.
func TestLateViewOfADeletedServiceTakesNothingBack(t *testing.T) {
	r, _ := newTestRegistry(t)
	ip := ips("10.96.0.3")[0]
	r.ObserveIPAddress(ip, key("ns", "gone"), "uid-1")
	if !r.ForgetStaleHold(ip) { // the live read found no IPAddress
		t.Fatal("nothing forgotten")
	}
	r.ObserveIPAddress(ip, key("ns", "gone"), "uid-1") // a late update of the deleted object
	if _, err := r.Assign(AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: []netip.Addr{ip}}); err != nil {
		t.Fatal(err)
	}
	if f := r.Observe(key("ns", "gone"), []netip.Addr{ip}, noLabel); len(f) != 0 {
		t.Fatalf("findings %v for the late view", f)
	}
	if err := r.Validate(key("ns", "next"), []netip.Addr{ip}, nil, noLabel, false); err != nil {
		t.Fatalf("the granted Service is refused after a late view of the deleted one: %v", err)
	}
	r.Observe(key("ns", "gone"), nil, nil)
	r.Observe(key("ns", "next"), []netip.Addr{ip}, noLabel)
	if h, _ := r.HolderOf(ip); h != key("ns", "next") {
		t.Fatalf("holder %v, want ns/next", h)
	}
}

// The pool's status counts the Services holding its addresses and the webhook's reservations,
// not an IPAddress object alone (one that kube-apiserver keeps for a minute for a Service that
// is gone).
func TestStatusCountsServicesNotLeftoverIPAddresses(t *testing.T) {
	r, _ := newTestRegistry(t)
	r.Observe(key("ns", "live"), ips("10.96.0.3"), noLabel)
	r.ObserveIPAddress(ips("10.96.0.3")[0], key("ns", "live"), "")
	r.ObserveIPAddress(ips("10.96.0.4")[0], key("ns", "gone"), "")
	if _, err := r.Assign(AssignRequest{Service: key("ns", "new"), NamespaceLabels: noLabel}); err != nil {
		t.Fatal(err)
	}
	st, _ := r.Status("default", 1, nil)
	// 62 addresses, 8 carved for team-a, 1 reserved: 53; the leftover IPAddress is neither
	// allocated nor free.
	if f := st.Status.Families[0]; f.Allocated != 2 || f.Free != "50" {
		t.Fatalf("allocated %d, free %s; want 2 (a Service and a reservation) and 50", f.Allocated, f.Free)
	}
}

// With the caches behind, the API server has the last word: a requested address whose IPAddress
// is gone is granted, and a free address whose IPAddress the cache has not shown is not handed out.
func TestAdmissionReadsIPAddressesLive(t *testing.T) {
	held := ipAddressOf("10.96.0.3", service("ns", "gone"))
	for _, tc := range []struct {
		name      string
		live      []client.Object
		requested []netip.Addr
		want      string // the address granted, or "" for a refusal
	}{
		{name: "requested, Service and IPAddress deleted but still in the caches: granted", requested: ips("10.96.0.3"), want: "10.96.0.3"},
		{name: "requested, IPAddress still there: refused", live: []client.Object{held}, requested: ips("10.96.0.3")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			r.Observe(key("ns", "gone"), ips("10.96.0.3"), noLabel)
			r.ObserveIPAddress(ips("10.96.0.3")[0], key("ns", "gone"), "")
			a := &serviceAdmission{registry: r, ipAddresses: true,
				live: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(tc.live...).Build()}
			got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: tc.requested})
			if tc.want == "" {
				if !errors.Is(err, allocator.ErrAllocated) {
					t.Fatalf("got %v, %v; want ErrAllocated", got, err)
				}
				return
			}
			if err != nil || len(got) != 1 || got[0].String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}

	t.Run("dynamic: only the address without an IPAddress is handed out", func(t *testing.T) {
		clock := &fakeClock{t: time.Unix(1000, 0)}
		r := NewRegistry(time.Minute, clock.now, nil)
		r.SetPools([]ipamv1alpha1.ClusterIPPool{testPool("default", []string{"10.96.0.0/29"}, nil)})
		var live []client.Object
		for _, ip := range []string{"10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.5", "10.96.0.6"} {
			live = append(live, ipAddressOf(ip, service("ns", "elsewhere-"+ip)))
		}
		a := &serviceAdmission{registry: r, ipAddresses: true,
			live: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(live...).Build()}
		got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "new"), NamespaceLabels: noLabel})
		if err != nil || len(got) != 1 || got[0] != ips("10.96.0.4")[0] {
			t.Fatalf("got %v, %v; want [10.96.0.4], the one address without an IPAddress", got, err)
		}
		// Addresses found taken stay held until their IPAddress objects, once seen, are gone.
		if got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "more"), NamespaceLabels: noLabel}); !errors.Is(err, allocator.ErrFull) {
			t.Fatalf("another create: %v, %v; want ErrFull", got, err)
		}
	})
}

// A requested address refused over a stale hold is granted when the repair loop sees the
// deleted Service and its IPAddress go while the webhook reads the IPAddress live (the
// deletions arrive just then): nothing is left to forget, and the address is free.
func TestStaleHoldReleasedDuringTheLiveRead(t *testing.T) {
	r, _ := newTestRegistry(t)
	ip := ips("10.96.0.3")
	gone := key("ns", "gone")
	r.Observe(gone, ip, noLabel)
	r.ObserveIPAddress(ip[0], gone, "uid-1")
	live := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			r.IPAddressGone(ip[0], gone, "uid-1")
			r.Observe(gone, nil, nil)
			return c.Get(ctx, k, obj, opts...)
		},
	}).Build()
	a := &serviceAdmission{registry: r, ipAddresses: true, live: live}
	got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel, Requested: ip})
	if err != nil || len(got) != 1 || got[0] != ip[0] {
		t.Fatalf("got %v, %v; want %v granted", got, err, ip)
	}
}

// The validating webhook runs after kube-apiserver created the new Service's IPAddress: an
// address our caches still show held by a deleted Service is granted when the live IPAddress
// names the Service being validated, and refused when it names another.
func TestValidationOfAnAddressTheAPIServerGaveToTheServiceItself(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent types.NamespacedName
		want   bool // granted
	}{
		{name: "live IPAddress of the Service being validated: granted", parent: key("ns", "next"), want: true},
		{name: "live IPAddress of another Service: refused", parent: key("ns", "other")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			ip := ips("10.96.0.3")
			r.Observe(key("ns", "gone"), ip, noLabel)
			r.ObserveIPAddress(ip[0], key("ns", "gone"), "")
			live := ipAddressOf("10.96.0.3", service(tc.parent.Namespace, tc.parent.Name))
			a := &serviceAdmission{registry: r, ipAddresses: true,
				live: fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(live).Build()}
			err := a.grantFreed(context.Background(), key("ns", "next"), func() error {
				return r.Validate(key("ns", "next"), ip, nil, noLabel, false)
			})
			if tc.want && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.want && !errors.Is(err, allocator.ErrAllocated) {
				t.Fatalf("got %v; want ErrAllocated", err)
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
			expiry := newReservationExpiry(builder.Build(), registry, time.Second, true)
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

// After an API server restart the watches stay down for many seconds, and Services created and
// deleted meanwhile leave their reservations behind: a create that finds the pool full of them
// drops those nothing holds and is granted, and the check reads the cluster in a few lists, not
// an object per reservation (hundreds of them would outlast the admission's deadline).
func TestFullPoolReclaimsReservationsOfServicesGoneUnseen(t *testing.T) {
	r, clock := newTestRegistry(t)
	reserved := fillWithReservations(t, r)
	clock.t = clock.t.Add(reclaimAge)
	// Still held in the cluster: a create in flight (its IPAddress exists) and a Service.
	inFlight := ipAddressOf(reserved[0].String(), service("ns", "gone-0"))
	live := service("ns", "gone-1")
	live.Spec.ClusterIP = reserved[1].String()
	reads := 0
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(inFlight, live).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads++
			return c.Get(ctx, k, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			reads++
			return c.List(ctx, list, opts...)
		},
	}).Build()
	expiry := newReservationExpiry(reader, r, time.Second, true)
	a := &serviceAdmission{registry: r, ipAddresses: true, live: reader, reclaim: expiry.reclaim}
	got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel})
	if err != nil {
		t.Fatalf("a pool full of %d reservations of Services gone unseen refused a create: %v", len(reserved), err)
	}
	if got[0] == reserved[0] || got[0] == reserved[1] {
		t.Fatalf("got %v, which is still held in the cluster", got)
	}
	// The reclaim pass: the IPAddresses, the Services of the one namespace; then the live check
	// of the address handed out.
	if reads > 3 {
		t.Errorf("%d reads of the API server for %d reservations, want at most 3", reads, len(reserved))
	}
	if want := 3; r.Pending() != want { // the two held, and the new one
		t.Errorf("%d reservations left, want %d", r.Pending(), want)
	}
}

// Churn fast enough to fill a pool within reclaimAge while the watches are down: a reservation
// whose create our validating webhook has seen (kube-apiserver had created its IPAddress by
// then) is checked at once, whatever its age; a young one it has not seen may belong to a
// create still on its way to the IPAddress, and is kept.
func TestFullPoolReclaimsValidatedReservationsAtOnce(t *testing.T) {
	r, reserved, validated := fullPoolWithOneValidated(t)
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build() // nothing holds any of them
	expiry := newReservationExpiry(reader, r, time.Second, true)
	a := &serviceAdmission{registry: r, ipAddresses: true, live: reader, reclaim: expiry.reclaim}

	got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel})
	if err != nil {
		t.Fatalf("a pool full of reservations, one of a create our validating webhook saw end, refused a create: %v", err)
	}
	if got[0] != validated {
		t.Errorf("got %v, want %v, the one address whose create is known to be over", got, validated)
	}
	if want := len(reserved); r.Pending() != want { // the young unvalidated ones, and the new one
		t.Errorf("%d reservations left, want %d: a young one our validating webhook has not seen was dropped", r.Pending(), want)
	}
	if _, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "another"), NamespaceLabels: noLabel}); !errors.Is(err, allocator.ErrFull) {
		t.Errorf("with only young reservations our validating webhook has not seen, a create got %v, want range is full", err)
	}
}

// Without IPAddress objects (an API server before v1.33) nothing shows that a validated create
// has been allocated, so a young reservation waits for reclaimAge, validated or not.
func TestFullPoolWithoutIPAddressesKeepsYoungValidatedReservations(t *testing.T) {
	r, _, _ := fullPoolWithOneValidated(t)
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build()
	expiry := newReservationExpiry(reader, r, time.Second, false)
	a := &serviceAdmission{registry: r, live: reader, reclaim: expiry.reclaim}
	if _, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel}); !errors.Is(err, allocator.ErrFull) {
		t.Errorf("got %v, want range is full: the validated create may not be stored yet", err)
	}
}

// fullPoolWithOneValidated fills a pool with young reservations (fillWithReservations) and has
// our validating webhook see the create of the last one, which it returns.
func fullPoolWithOneValidated(t *testing.T) (r *Registry, reserved []netip.Addr, validated netip.Addr) {
	t.Helper()
	r, _ = newTestRegistry(t)
	reserved = fillWithReservations(t, r)
	last := len(reserved) - 1
	if err := r.Validate(key("ns", fmt.Sprintf("gone-%d", last)), reserved[last:], nil, noLabel, false); err != nil {
		t.Fatal(err)
	}
	return r, reserved, reserved[last]
}

// fillWithReservations assigns addresses to Services "ns/gone-N" until the pool is full, as
// admissions whose Services were never seen leave it, and returns the addresses.
func fillWithReservations(t *testing.T, r *Registry) []netip.Addr {
	t.Helper()
	var reserved []netip.Addr
	for i := 0; ; i++ {
		got, err := r.Assign(AssignRequest{Service: key("ns", fmt.Sprintf("gone-%d", i)), NamespaceLabels: noLabel})
		if errors.Is(err, allocator.ErrFull) {
			return reserved
		}
		if err != nil {
			t.Fatal(err)
		}
		reserved = append(reserved, got[0])
	}
}

// When the check of old reservations fails, a full pool is refused with the reason it may only
// look full.
func TestFullPoolSaysWhenReservationsCouldNotBeChecked(t *testing.T) {
	r, clock := newTestRegistry(t)
	fillWithReservations(t, r)
	clock.t = clock.t.Add(reclaimAge)
	broken := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
		},
	}).Build()
	expiry := newReservationExpiry(broken, r, time.Second, true)
	a := &serviceAdmission{registry: r, ipAddresses: true, live: broken, reclaim: expiry.reclaim}
	_, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "next"), NamespaceLabels: noLabel})
	if !errors.Is(err, allocator.ErrFull) || !strings.Contains(err.Error(), "may only look full") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v; want range is full, with why it may only look so", err)
	}
}

// An admission that waits for another's reclaim pass gives up when its own deadline ends.
func TestReclaimWaitEndsWithTheAdmission(t *testing.T) {
	r, clock := newTestRegistry(t)
	if _, err := r.Assign(AssignRequest{Service: key("ns", "gone"), NamespaceLabels: noLabel}); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(reclaimAge)
	noRead := func() error {
		t.Error("the API server was read after the admission's deadline")
		return errors.New("late")
	}
	reader := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return noRead()
		},
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return noRead()
		},
	}).Build()
	expiry := newReservationExpiry(reader, r, time.Second, true)
	expiry.reclaiming <- struct{}{} // another admission's pass runs
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := expiry.reclaim(ctx); err != nil { // returns at once: it checked nothing
		t.Fatalf("a reclaim that gave up waiting reported %v", err)
	}
	if r.Pending() != 1 {
		t.Fatalf("%d reservations, want the one left for the running pass", r.Pending())
	}
}

// A replica that cannot read from the API server says so, hands out nothing it could not check,
// and keeps no reservation; its readiness check fails.
func TestUnreachableAPIServer(t *testing.T) {
	r, _ := newTestRegistry(t)
	broken := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
		},
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
		},
	}).Build()
	a := &serviceAdmission{registry: r, ipAddresses: true, live: broken}
	got, err := a.assign(context.Background(), AssignRequest{Service: key("ns", "new"), NamespaceLabels: noLabel})
	if err == nil || !strings.Contains(err.Error(), "could not check that the API server has no IPAddress") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v, %v; want an error that says what failed", got, err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d reservations left behind", r.Pending())
	}
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	if err := apiServerReachable(broken)(req); err == nil {
		t.Fatal("readiness passes without the API server")
	}
	if err := apiServerReachable(fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).Build())(req); err != nil {
		t.Fatalf("readiness with the API server: %v", err)
	}
}
