package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

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
		if un := r.Unclaimed(svc, got); len(un) != 1 || un[0] != want {
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
