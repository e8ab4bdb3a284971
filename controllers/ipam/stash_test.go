package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

const stashMaxAge = 15 * time.Second

// newStashRegistry has a large default pool 10.96.0.0/16 (63 entries may be stashed) and the
// small pool team-a 10.97.0.0/24 (too small to stash from), with a stash of at most 8.
func newStashRegistry(t *testing.T) (*Registry, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	r := NewRegistry(time.Minute, clock.now, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("default", []string{"10.96.0.0/16"}, nil),
		testPool("team-a", []string{"10.97.0.0/24"}, map[string]string{"team": "a"}),
	})
	r.EnableStash(8, nil)
	return r, clock
}

// checkAll reports every new entry as checked.
func checkAll(r *Registry, fresh []netip.Addr) {
	for _, ip := range fresh {
		r.StashChecked(ip, true)
	}
}

func TestStash(t *testing.T) {
	web := key("ns", "web")
	assign := func(t *testing.T, r *Registry, labels map[string]string) netip.Addr {
		t.Helper()
		got, err := r.Assign(AssignRequest{Service: web, NamespaceLabels: labels})
		if err != nil || len(got) != 1 {
			t.Fatalf("Assign = %v, %v; want one address", got, err)
		}
		return got[0]
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, r *Registry, clock *fakeClock)
	}{{
		name: "a large pool sets aside the smallest stash, a small pool none",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			if len(fresh) != stashMinSize {
				t.Fatalf("StashFill = %v, want %d addresses of the default pool", fresh, stashMinSize)
			}
			for _, ip := range fresh {
				if r.PoolOf(ip) != "default" {
					t.Errorf("%s of pool %q set aside; want only the default pool's", ip, r.PoolOf(ip))
				}
			}
			if more := r.StashFill(stashMaxAge); len(more) != 0 {
				t.Errorf("a second StashFill set aside %v; the stash is full", more)
			}
		},
	}, {
		name: "a checked entry is handed out as checked; one being checked is not handed out",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			r.StashChecked(fresh[1], true)
			got := assign(t, r, noLabel)
			if got != fresh[1] {
				t.Fatalf("Assign = %s, want the checked entry %s", got, fresh[1])
			}
			if unchecked := r.Unchecked(web, []netip.Addr{got}); len(unchecked) != 0 {
				t.Errorf("Unchecked = %v; a stashed address was read live already", unchecked)
			}
			next := assign(t, r, noLabel)
			if next == fresh[0] {
				t.Errorf("Assign handed out %s, which is still being checked", next)
			}
			if unchecked := r.Unchecked(web, []netip.Addr{next}); len(unchecked) != 1 {
				t.Errorf("Unchecked = %v; an address from the bitmap must be read live", unchecked)
			}
		},
	}, {
		name: "a requested address this replica has set aside is granted",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			checkAll(r, fresh)
			got, err := r.Assign(AssignRequest{Service: web, NamespaceLabels: noLabel, Requested: fresh[1:]})
			if err != nil || len(got) != 1 || got[0] != fresh[1] {
				t.Fatalf("Assign requesting %s = %v, %v; want it granted", fresh[1], got, err)
			}
			if r.isStashed(fresh[1]) || !r.isAllocated(fresh[1]) {
				t.Errorf("%s: stashed %v, allocated %v; want out of the stash and taken", fresh[1], r.isStashed(fresh[1]), r.isAllocated(fresh[1]))
			}
			if next := assign(t, r, noLabel); next != fresh[0] {
				t.Errorf("the next dynamic address is %s, want the other stashed one, %s", next, fresh[0])
			}
		},
	}, {
		name: "a stopping replica empties its stash",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			checkAll(r, fresh)
			r.EmptyStash()
			for _, ip := range fresh {
				if r.isStashed(ip) || r.isAllocated(ip) {
					t.Errorf("%s: stashed %v, allocated %v; want free", ip, r.isStashed(ip), r.isAllocated(ip))
				}
			}
			if more := r.StashFill(stashMaxAge); len(more) != 0 {
				t.Errorf("StashFill after EmptyStash set aside %v", more)
			}
		},
	}, {
		name: "a stashed address whose claim was deleted leaves the stash",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			r.RecordClaim(fresh[0], types.NamespacedName{}, "u1", true, time.Minute)
			checkAll(r, fresh)
			r.ForgetClaim(fresh[0], "u1")
			if r.isStashed(fresh[0]) || r.isAllocated(fresh[0]) {
				t.Errorf("%s: stashed %v, allocated %v after its claim was deleted; want free", fresh[0], r.isStashed(fresh[0]), r.isAllocated(fresh[0]))
			}
		},
	}, {
		name: "a claim made for an entry dropped during its check is due at once",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			r.EmptyStash()
			r.RecordClaim(fresh[0], types.NamespacedName{}, "u1", true, time.Minute) // the check's claim lands late
			r.StashChecked(fresh[0], true)
			if mine, _ := r.DueClaims(); len(mine) != 1 || mine[0].IP != fresh[0] {
				t.Errorf("DueClaims = %v, want the late claim on %s", mine, fresh[0])
			}
		},
	}, {
		name: "a small pool's admissions take no stash",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			checkAll(r, r.StashFill(stashMaxAge))
			got := assign(t, r, teamA)
			if r.PoolOf(got) != "team-a" || len(r.Unchecked(web, []netip.Addr{got})) != 1 {
				t.Errorf("Assign = %s of pool %q; want an unchecked address of team-a", got, r.PoolOf(got))
			}
		},
	}, {
		name: "an empty stash grows, up to its maximum; entries left unused shrink it",
		run: func(t *testing.T, r *Registry, clock *fakeClock) {
			for _, want := range []int{2, 4, 8, 8} {
				fresh := r.StashFill(stashMaxAge)
				checkAll(r, fresh)
				if ready, _ := r.Stashed(); ready != want {
					t.Fatalf("stash of %d, want %d", ready, want)
				}
				for range want + 1 { // one more than the stash has: a miss
					assign(t, r, noLabel)
				}
			}
			checkAll(r, r.StashFill(stashMaxAge))
			clock.t = clock.t.Add(stashMaxAge + time.Second)
			checkAll(r, r.StashFill(stashMaxAge))
			if ready, _ := r.Stashed(); ready != 4 {
				t.Errorf("after the stash aged unused it holds %d, want 4 (halved)", ready)
			}
		},
	}, {
		name: "an entry older than the maximum age is given back and another set aside",
		run: func(t *testing.T, r *Registry, clock *fakeClock) {
			old := r.StashFill(stashMaxAge)
			checkAll(r, old)
			clock.t = clock.t.Add(stashMaxAge + time.Second)
			fresh := r.StashFill(stashMaxAge)
			for _, ip := range old {
				if r.isStashed(ip) {
					t.Errorf("%s is still stashed after its maximum age", ip)
				}
			}
			if len(fresh) != stashMinSize {
				t.Errorf("StashFill set aside %v after giving the old ones back, want %d", fresh, stashMinSize)
			}
		},
	}, {
		name: "an IPAddress object for a stashed address takes it out of the stash",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			checkAll(r, fresh)
			r.ObserveIPAddress(fresh[0], key("other", "svc"), "u1")
			for range 2 {
				if got := assign(t, r, noLabel); got == fresh[0] {
					t.Fatalf("Assign handed out %s, which an IPAddress object holds", got)
				}
			}
		},
	}, {
		name: "a live read that finds an IPAddress keeps the address for its Service",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			r.StashHeldBy(fresh[0], key("other", "svc"))
			if r.isStashed(fresh[0]) || !r.isAllocated(fresh[0]) {
				t.Errorf("%s: stashed %v, allocated %v; want out of the stash and still taken", fresh[0], r.isStashed(fresh[0]), r.isAllocated(fresh[0]))
			}
		},
	}, {
		name: "a pool change empties the stash and frees its addresses",
		run: func(t *testing.T, r *Registry, _ *fakeClock) {
			fresh := r.StashFill(stashMaxAge)
			checkAll(r, fresh)
			pool := testPool("team-a", []string{"10.97.0.0/23"}, map[string]string{"team": "a"})
			pool.Generation = 2
			r.SetPool(&pool)
			for _, ip := range fresh {
				if r.isStashed(ip) || r.isAllocated(ip) {
					t.Errorf("%s: stashed %v, allocated %v after the rebuild; want neither", ip, r.isStashed(ip), r.isAllocated(ip))
				}
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r, clock := newStashRegistry(t)
			tc.run(t, r, clock)
		})
	}
}

func (r *Registry) isStashed(ip netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.stash[ip]
	return ok
}

func (r *Registry) isAllocated(ip netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, rg := r.ownerLocked(ip)
	return rg != nil && rg.Has(ip)
}

// TestStashedAddressIsHandedOutWithoutAPICalls follows a stashed address between two replicas:
// replica A claims and checks it ahead of time, hands it out with no API call, then names the
// Service in its claim; replica B, asked about the address for that Service, waits for that.
func TestStashedAddressIsHandedOutWithoutAPICalls(t *testing.T) {
	const lifetime = 30 * time.Second
	ctx := context.Background()
	web := key("ns", "web")
	var calls atomic.Int64
	api := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			calls.Add(1)
			return c.Get(ctx, k, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			calls.Add(1)
			obj.SetUID(types.UID(fmt.Sprintf("uid-%d", calls.Load()))) // as the API server does
			return c.Create(ctx, obj, opts...)
		},
	}).Build()
	replica := func(identity string) (*Registry, *serviceAdmission, *stashFiller) {
		r, _ := newStashRegistry(t)
		cl := &claimer{client: api, apiReader: api, namespace: "kube-system", identity: identity,
			lifetime: lifetime, registry: r, poolOf: r.PoolOf}
		f := newStashFiller(r, api, cl, lifetime/2)
		r.EnableStash(8, f.taken)
		return r, &serviceAdmission{registry: r, ipAddresses: true, live: api, claims: cl}, f
	}
	rA, a, fillA := replica("replica-a")
	rB, b, _ := replica("replica-b")

	fillA.refill(ctx) // the checks run in the background
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ready, checking := rA.Stashed()
		if ready == stashMinSize && checking == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica A stashed %d addresses (%d being checked), want %d", ready, checking, stashMinSize)
		}
	}
	before := calls.Load()
	got, err := a.assign(ctx, AssignRequest{Service: web, NamespaceLabels: noLabel})
	if err != nil || len(got) != 1 {
		t.Fatalf("assign = %v, %v", got, err)
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("the admission made %d API calls; a stashed address needs none", n)
	}
	ip := got[0]
	lease := &coordinationv1.Lease{}
	if err := api.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: ClaimName(ip)}, lease); err != nil {
		t.Fatalf("the stashed address %s has no claim: %v", ip, err)
	}
	if _, service, holder, _ := claimOf(lease); service != (types.NamespacedName{}) || holder != "replica-a" {
		t.Fatalf("the claim of %s before binding is %s's for %q; want replica-a's for no Service", ip, holder, service)
	}
	rB.RecordClaim(ip, types.NamespacedName{}, lease.UID, false, lifetime) // B's watch saw the stash claim

	// B is asked to validate the address for web while A has not named web in the claim yet.
	validated := make(chan error, 1)
	go func() {
		err := rB.Validate(web, got, nil, noLabel, false)
		if ours, cerr := b.claimedForUs(ctx, web, err); err != nil && cerr == nil && ours {
			err = rB.Validate(web, got, nil, noLabel, false)
		}
		validated <- err
	}()
	time.Sleep(20 * time.Millisecond) // B polls the unbound claim meanwhile
	if bind := rA.ClaimsToBind(); len(bind) != 1 || bind[0].IP != ip || bind[0].Service != web {
		t.Fatalf("ClaimsToBind = %v, want %s for %s", bind, ip, web)
	}
	fillA.bindHandedOut(ctx, logr.Discard())
	if bind := rA.ClaimsToBind(); len(bind) != 0 {
		t.Errorf("ClaimsToBind after binding = %v, want none", bind)
	}
	select {
	case err := <-validated:
		if err != nil {
			t.Errorf("replica B refused %s for %s, which replica A handed it: %v", ip, web, err)
		}
	case <-time.After(2 * bindWait):
		t.Fatal("replica B did not answer")
	}
	if err := api.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
		t.Fatal(err)
	}
	if _, service, _, _ := claimOf(lease); service != web {
		t.Errorf("the claim names %q after binding, want %s", service, web)
	}
}

// TestUnboundStashClaimFailsTheCall: a claim another replica made for its stash that still names
// no Service after the wait (that replica died between its answer and naming the Service) fails
// the HTTP call, so that failurePolicy decides, instead of denying a create the API server may
// grant (an answer with allowed=false is a denial whatever its code).
func TestUnboundStashClaimFailsTheCall(t *testing.T) {
	const lifetime = 30 * time.Second
	ctx := context.Background()
	r, _ := newStashRegistry(t)
	api := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).
		WithObjects(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}).Build()
	dead := &claimer{client: api, apiReader: api, namespace: "kube-system", identity: "replica-dead",
		lifetime: lifetime, registry: NewRegistry(time.Minute, nil, nil), poolOf: r.PoolOf}
	ip := netip.MustParseAddr("10.96.3.4")
	if ok, err := dead.stash(ctx, ip); !ok || err != nil {
		t.Fatalf("stash claim: %v, %v", ok, err)
	}
	lease := &coordinationv1.Lease{}
	if err := api.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: ClaimName(ip)}, lease); err != nil {
		t.Fatal(err)
	}
	r.RecordClaim(ip, types.NamespacedName{}, lease.UID, false, lifetime)
	r.MarkReady()
	shared := serviceAdmission{registry: r, namespaces: api, apiReader: api, decoder: admission.NewDecoder(clientgoscheme.Scheme),
		claims: &claimer{client: api, apiReader: api, namespace: "kube-system", identity: "replica-b",
			lifetime: lifetime, registry: r, poolOf: r.PoolOf, bindWait: 50 * time.Millisecond}}
	for path, handler := range map[string]admission.Handler{MutateRetryPath: &MutatingWebhook{shared}, ValidatePath: &ValidatingWebhook{shared}} {
		t.Run(path, func(t *testing.T) {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
				Spec: corev1.ServiceSpec{ClusterIP: ip.String(), ClusterIPs: []string{ip.String()},
					Ports: []corev1.ServicePort{{Port: 80}}}}
			raw, err := json.Marshal(svc)
			if err != nil {
				t.Fatal(err)
			}
			review, err := json.Marshal(admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{UID: "1", Operation: admissionv1.Create, Namespace: "ns", Name: "web",
					Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Service"}, Object: runtime.RawExtension{Raw: raw}}})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(review))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			failableCalls(&webhook.Admission{Handler: handler}).ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "has not said for which Service") {
				t.Errorf("HTTP %d %q; want 503 saying the claim names no Service", rec.Code, rec.Body.String())
			}
		})
	}
}
