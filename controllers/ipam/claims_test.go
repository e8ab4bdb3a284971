package ipam

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

func TestClaimName(t *testing.T) {
	for _, tc := range []struct {
		name, ip, want string
	}{
		{name: "IPv4 keeps its dots", ip: "10.96.0.7", want: "clusterip-10.96.0.7"},
		{name: "IPv4-mapped IPv6 is the IPv4 address", ip: "::ffff:10.96.0.7", want: "clusterip-10.96.0.7"},
		{name: "IPv6 is its 32 hex digits", ip: "fd00::1", want: "clusterip-fd000000000000000000000000000001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClaimName(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Errorf("ClaimName(%s) = %q, want %q", tc.ip, got, tc.want)
			}
		})
	}
}

func TestClaimOf(t *testing.T) {
	lease := func(name, ip, service string) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
				claimIPAnnotation: ip, claimServiceAnnotation: service}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("replica-1")},
		}
	}
	for _, tc := range []struct {
		name        string
		lease       *coordinationv1.Lease
		wantOK      bool
		wantIP      string
		wantService types.NamespacedName
	}{
		{name: "a claim", lease: lease("clusterip-10.96.0.7", "10.96.0.7", "ns/web"),
			wantOK: true, wantIP: "10.96.0.7", wantService: key("ns", "web")},
		{name: "a claim for a generated name", lease: lease("clusterip-10.96.0.7", "10.96.0.7", "ns/"),
			wantOK: true, wantIP: "10.96.0.7", wantService: key("ns", "")},
		{name: "a name that is not the address's", lease: lease("clusterip-10.96.0.8", "10.96.0.7", "ns/web")},
		{name: "no address", lease: lease("clusterip-10.96.0.7", "", "ns/web")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, service, holder, ok := claimOf(tc.lease)
			if ok != tc.wantOK {
				t.Fatalf("claimOf ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if ip.String() != tc.wantIP || service != tc.wantService || holder != "replica-1" {
				t.Errorf("claimOf = %s %s %s, want %s %s replica-1", ip, service, holder, tc.wantIP, tc.wantService)
			}
		})
	}
}

// TestClaims follows an address through the claims of two replicas, as this replica's registry
// sees it.
func TestClaims(t *testing.T) {
	const lifetime = 30 * time.Second
	web, other := key("default", "web"), key("default", "other")
	x := netip.MustParseAddr("10.96.0.1") // of the pool 10.96.0.0/30, which has two: .1 and .2
	assignTo := func(svc types.NamespacedName, requested ...netip.Addr) func(*Registry, *fakeClock) error {
		return func(r *Registry, _ *fakeClock) error {
			_, err := r.Assign(AssignRequest{Service: svc, NamespaceLabels: noLabel, Requested: requested})
			return err
		}
	}
	third := key("default", "third")
	for _, tc := range []struct {
		name      string
		steps     []func(r *Registry, clock *fakeClock) error
		wantErr   error // of the last step
		wantMine  []netip.Addr
		wantStale []netip.Addr
	}{
		{
			name: "another replica's claim keeps the address from dynamic assignment",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				assignTo(web),
				assignTo(third),
			},
			wantErr: allocator.ErrFull,
		},
		{
			name: "a requested address another Service claimed is denied",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				assignTo(web, x),
			},
			wantErr: allocator.ErrAllocated,
		},
		{
			name: "a requested address claimed for the same Service passes (the second mutating call, or validation)",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error {
					r.RecordClaim(x, key("default", ""), "u1", false, lifetime)
					return nil
				},
				assignTo(web, x),
			},
		},
		{
			name: "the claim's deletion frees the address",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.ForgetClaim(x, "u1"); return nil },
				assignTo(web),
				assignTo(third),
			},
		},
		{
			name: "the deletion of an older claim of the address changes nothing",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u2", false, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.ForgetClaim(x, "u1"); return nil },
				assignTo(web),
				assignTo(third),
			},
			wantErr: allocator.ErrFull,
		},
		{
			name: "a claim of a Service the repair loop sees keeps the address when the claim goes",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.Observe(other, []netip.Addr{x}, noLabel); return nil },
				func(r *Registry, _ *fakeClock) error { r.ForgetClaim(x, "u1"); return nil },
				assignTo(web),
				assignTo(third),
			},
			wantErr: allocator.ErrFull,
		},
		{
			name: "my claim waits while its reservation waits for the Service",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
			},
		},
		{
			name: "my claim is due once its Service was held for a lifetime",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.Observe(web, []netip.Addr{x}, noLabel); return nil },
				func(_ *Registry, c *fakeClock) error { c.t = c.t.Add(lifetime + time.Second); return nil },
			},
			wantMine: []netip.Addr{x},
		},
		{
			name: "my claim is due at once when its Service is gone",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.Observe(web, []netip.Addr{x}, noLabel); return nil },
				func(r *Registry, _ *fakeClock) error { r.Observe(web, nil, nil); return nil },
			},
			wantMine: []netip.Addr{x},
		},
		{
			name: "my claim is due at once when the admission could not claim everything",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error {
					r.CancelReservations(web, []netip.Addr{x})
					r.AbandonClaims([]netip.Addr{x})
					return nil
				},
			},
			wantMine: []netip.Addr{x},
		},
		{
			name: "my claim stays while its Service is unseen, even once the reservation expired",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.CancelReservations(web, []netip.Addr{x}); return nil },
				assignTo(third, x),
			},
			wantErr: allocator.ErrAllocated,
		},
		{
			name: "my claim whose Service never appeared is due at its deadline",
			steps: []func(*Registry, *fakeClock) error{
				assignToFirst(web, x),
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, web, "u1", true, lifetime); return nil },
				func(r *Registry, _ *fakeClock) error { r.CancelReservations(web, []netip.Addr{x}); return nil },
				func(_ *Registry, c *fakeClock) error { c.t = c.t.Add(lifetime + time.Second); return nil },
			},
			wantMine: []netip.Addr{x},
		},
		{
			name: "another replica's claim is stale after two lifetimes, not one",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				func(_ *Registry, c *fakeClock) error { c.t = c.t.Add(lifetime + time.Second); return nil },
			},
		},
		{
			name: "another replica's claim is stale after two lifetimes",
			steps: []func(*Registry, *fakeClock) error{
				func(r *Registry, _ *fakeClock) error { r.RecordClaim(x, other, "u1", false, lifetime); return nil },
				func(_ *Registry, c *fakeClock) error { c.t = c.t.Add(2*lifetime + time.Second); return nil },
			},
			wantStale: []netip.Addr{x},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1000, 0)}
			r := NewRegistry(lifetime, clock.now, nil)
			r.SetPools([]ipamv1alpha1.ClusterIPPool{testPool("default", []string{"10.96.0.0/30"}, nil)})
			var err error
			for _, s := range tc.steps {
				err = s(r, clock)
			}
			if !errors.Is(err, tc.wantErr) && (tc.wantErr != nil || err != nil) {
				t.Fatalf("last step: %v, want %v", err, tc.wantErr)
			}
			mine, stale := r.DueClaims()
			if got := refIPs(mine); !slices.Equal(got, tc.wantMine) {
				t.Errorf("DueClaims mine = %v, want %v", got, tc.wantMine)
			}
			if got := refIPs(stale); !slices.Equal(got, tc.wantStale) {
				t.Errorf("DueClaims stale = %v, want %v", got, tc.wantStale)
			}
		})
	}
}

// assignToFirst has Service svc request want and checks that the admission must claim it.
func assignToFirst(svc types.NamespacedName, want netip.Addr) func(*Registry, *fakeClock) error {
	return func(r *Registry, _ *fakeClock) error {
		got, err := r.Assign(AssignRequest{Service: svc, NamespaceLabels: noLabel, Requested: []netip.Addr{want}})
		if err != nil {
			return err
		}
		if un, lost := r.Unclaimed(svc, got); len(un) != 1 || un[0] != want || lost.IsValid() {
			return errors.New("the new address is not listed as unclaimed")
		}
		return nil
	}
}

func refIPs(refs []ClaimRef) []netip.Addr {
	var out []netip.Addr
	for _, r := range refs {
		out = append(out, r.IP)
	}
	return out
}

// Two replicas pick the same free address at once (their bitmaps agree), and the other
// replica's claim reaches this one's watch while this admission is still checking the address
// live: this admission has lost the address and gives the Service another one. Taking the
// recorded claim for its own would hand one address to two Services, and kube-apiserver would
// refuse the second ("provided IP is already allocated").
func TestAdmissionLosesAnAddressClaimedWhileItWasChosen(t *testing.T) {
	const lifetime = 30 * time.Second
	r, _ := newTestRegistry(t)
	web, other := key("ns", "web"), key("ns", "other")
	var contested netip.Addr
	api := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, live := obj.(*networkingv1.IPAddress); live && !contested.IsValid() {
				// The other replica claims the address now; its Lease and its watch event
				// arrive before this admission claims.
				contested = netip.MustParseAddr(k.Name)
				theirs := (&claimer{namespace: "kube-system", identity: "replica-b", lifetime: lifetime, poolOf: r.PoolOf}).newLease(contested, other)
				if err := c.Create(ctx, theirs); err != nil {
					return err
				}
				r.RecordClaim(contested, other, theirs.UID, false, lifetime)
			}
			return c.Get(ctx, k, obj, opts...)
		},
	}).Build()
	a := &serviceAdmission{registry: r, ipAddresses: true, live: api,
		claims: &claimer{client: api, apiReader: api, namespace: "kube-system", identity: "replica-a",
			lifetime: lifetime, registry: r, poolOf: r.PoolOf}}
	got, err := a.assign(context.Background(), AssignRequest{Service: web, NamespaceLabels: noLabel})
	if err != nil {
		t.Fatalf("assign: %v", err)
	}
	if len(got) != 1 || got[0] == contested {
		t.Fatalf("got %v; want one address other than %s, which another replica claimed for %s", got, contested, other)
	}
	lease := &coordinationv1.Lease{}
	if err := api.Get(context.Background(), types.NamespacedName{Namespace: "kube-system", Name: ClaimName(got[0])}, lease); err != nil {
		t.Fatalf("the address handed out has no claim: %v", err)
	}
	if _, service, holder, _ := claimOf(lease); service != web || holder != "replica-a" {
		t.Errorf("the claim of %s is %s's for %s; want replica-a's for %s", got[0], holder, service, web)
	}
}
