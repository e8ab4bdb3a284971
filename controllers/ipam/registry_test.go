package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

var (
	teamA   = labels.Set{"team": "a"}
	noLabel = labels.Set{}
)

func testPool(name string, cidrs []string, selector map[string]string, reserved ...string) ipamv1alpha1.ClusterIPPool {
	p := ipamv1alpha1.ClusterIPPool{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: cidrs, Reserved: reserved}}
	if selector != nil {
		p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: selector}
	}
	return p
}

// fakeClock is a settable clock for reservation deadlines.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// newTestRegistry has a default pool 10.96.0.0/26 and the pool team-a 10.96.0.32/29 nested in it.
func newTestRegistry(t *testing.T) (*Registry, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	r := NewRegistry(time.Minute, clock.now, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("default", []string{"10.96.0.0/26"}, nil, "10.96.0.10"),
		testPool("team-a", []string{"10.96.0.32/29"}, map[string]string{"team": "a"}),
	})
	return r, clock
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func TestAssignPicksTheMostSpecificPool(t *testing.T) {
	r, _ := newTestRegistry(t)
	teamNet, defaultNet := netip.MustParsePrefix("10.96.0.32/29"), netip.MustParsePrefix("10.96.0.0/26")
	for i := range 6 {
		got, err := r.Assign(AssignRequest{Service: key("a", "svc"+string(rune('0'+i))), NamespaceLabels: teamA})
		if err != nil {
			t.Fatalf("Assign in team-a #%d: %v", i, err)
		}
		if len(got) != 1 || !teamNet.Contains(got[0]) {
			t.Fatalf("Assign in team-a = %v, want one address in %s", got, teamNet)
		}
	}
	_, err := r.Assign(AssignRequest{Service: key("a", "one-too-many"), NamespaceLabels: teamA})
	var ae *AdmissionError
	if !errors.As(err, &ae) || ae.Reason != ReasonFull || !errors.Is(err, allocator.ErrFull) {
		t.Fatalf("Assign in a full pool: error %v, want %s", err, ReasonFull)
	}
	for _, want := range []string{"range is full", "pool team-a", "spec.cidrs", "delete Services"} {
		if !contains(err.Error(), want) {
			t.Errorf("full message %q lacks %q", err, want)
		}
	}
	// The default pool never hands out team-a's addresses nor its reserved one: 62 - 8 - 1 = 53.
	for i := range 53 {
		got, err := r.Assign(AssignRequest{Service: key("b", "svc"+string(rune('A'+i))), NamespaceLabels: noLabel})
		if err != nil {
			t.Fatalf("Assign in default #%d: %v", i, err)
		}
		if !defaultNet.Contains(got[0]) || teamNet.Contains(got[0]) || got[0] == netip.MustParseAddr("10.96.0.10") {
			t.Fatalf("Assign in default = %v: outside the default pool, in team-a or reserved", got)
		}
	}
	if _, err := r.Assign(AssignRequest{Service: key("b", "full"), NamespaceLabels: noLabel}); !errors.Is(err, allocator.ErrFull) {
		t.Fatalf("default pool after 53 Services: %v, want range is full", err)
	}
	st, _ := r.Status("default", 1, nil)
	if got := st.Status.Families[0]; got.Capacity != "54" || got.Allocated != 53 || got.Free != "0" || got.Reserved != 1 {
		t.Errorf("default pool family status = %+v, want capacity 54, allocated 53, reserved 1, free 0", got)
	}
	if !meta.IsStatusConditionTrue(st.Status.Conditions, ipamv1alpha1.ConditionExhausted) {
		t.Errorf("default pool conditions %v: want Exhausted=True", st.Status.Conditions)
	}
}

func TestAssignRequestedIPs(t *testing.T) {
	r, _ := newTestRegistry(t)
	if _, err := r.Assign(AssignRequest{Service: key("a", "holder"), NamespaceLabels: teamA, Requested: ips("10.96.0.33")}); err != nil {
		t.Fatalf("a free requested IP: %v", err)
	}
	r.Observe(key("a", "holder"), ips("10.96.0.33"), teamA)
	tests := []struct {
		name      string
		service   types.NamespacedName
		labels    labels.Set
		requested []netip.Addr
		reason    string
		message   string
	}{
		{name: "an IP held by another Service names the pool and the holder", service: key("a", "second"), labels: teamA,
			requested: ips("10.96.0.33"), reason: ReasonAllocated,
			message: "provided IP is already allocated: 10.96.0.33 in pool team-a is held by Service a/holder"},
		{name: "a reserved IP is refused", service: key("b", "svc"), labels: noLabel, requested: ips("10.96.0.10"),
			reason: ReasonReserved, message: "10.96.0.10 in pool default is in its spec.reserved"},
		{name: "an IP outside every pool names the pools the namespace may use", service: key("a", "svc"), labels: teamA,
			requested: ips("10.96.1.5"), reason: ReasonOutOfRange,
			message: "10.96.1.5 is outside every pool namespace a may use: team-a (10.96.0.32/29), default (10.96.0.0/26)"},
		{name: "an IP of a pool that does not select the namespace is refused", service: key("b", "svc"), labels: noLabel,
			requested: ips("10.96.0.34"), reason: ReasonOutOfRange,
			message: "10.96.0.34 belongs to pool team-a, which does not select namespace b"},
		{name: "an IP being assigned to a Service not created yet is refused", service: key("a", "third"), labels: teamA,
			requested: ips("10.96.0.35"), reason: ReasonAllocated, message: "is being assigned to Service a/pending"},
	}
	if _, err := r.Assign(AssignRequest{Service: key("a", "pending"), NamespaceLabels: teamA, Requested: ips("10.96.0.35")}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Assign(AssignRequest{Service: tt.service, NamespaceLabels: tt.labels, Requested: tt.requested})
			var ae *AdmissionError
			if !errors.As(err, &ae) || ae.Reason != tt.reason || !contains(err.Error(), tt.message) {
				t.Fatalf("Assign() error = %v, want reason %s and a message containing %q", err, tt.reason, tt.message)
			}
		})
	}
	t.Run("the holder itself may repeat its IP on update", func(t *testing.T) {
		got, err := r.Assign(AssignRequest{Service: key("a", "holder"), NamespaceLabels: teamA, Requested: ips("10.96.0.33")})
		if err != nil || !cmp.Equal(got, ips("10.96.0.33"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
			t.Fatalf("Assign() = %v, %v; want [10.96.0.33]", got, err)
		}
	})
	t.Run("a dry run reserves nothing", func(t *testing.T) {
		if _, err := r.Assign(AssignRequest{Service: key("a", "dry"), NamespaceLabels: teamA, Requested: ips("10.96.0.36"), DryRun: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Assign(AssignRequest{Service: key("a", "real"), NamespaceLabels: teamA, Requested: ips("10.96.0.36")}); err != nil {
			t.Fatalf("the IP of a dry run is still free: %v", err)
		}
	})
}

func TestAssignDualStack(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{testPool("default", []string{"10.96.0.0/24", "fd00:10:96::/120"}, nil)})
	require := corev1.IPFamilyPolicyRequireDualStack
	got, err := r.Assign(AssignRequest{Service: key("a", "dual"), Policy: &require})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Is4() || !got[1].Is6() {
		t.Fatalf("RequireDualStack got %v, want an IPv4 then an IPv6 address", got)
	}
	// A single-stack Service that becomes dual-stack keeps its IPv4 and gets an IPv6 address.
	got, err = r.Assign(AssignRequest{Service: key("a", "single")})
	if err != nil {
		t.Fatal(err)
	}
	r.Observe(key("a", "single"), got, nil)
	upgraded, err := r.Assign(AssignRequest{Service: key("a", "single"), Policy: &require, Requested: got})
	if err != nil || len(upgraded) != 2 || upgraded[0] != got[0] || !upgraded[1].Is6() {
		t.Fatalf("upgrade to dual-stack: %v, %v; want [%s, <IPv6>]", upgraded, err, got[0])
	}
}

func TestObserveAdoptsReleasesAndReports(t *testing.T) {
	r, _ := newTestRegistry(t)
	if f := r.Observe(key("kube", "kubernetes"), ips("10.96.0.1"), nil); len(f) != 0 {
		t.Fatalf("adopting a free address: findings %v", f)
	}
	if _, err := r.Assign(AssignRequest{Service: key("b", "x"), Requested: ips("10.96.0.1")}); !errors.Is(err, allocator.ErrAllocated) {
		t.Fatalf("an adopted address is held: %v", err)
	}
	dup := r.Observe(key("b", "twin"), ips("10.96.0.1"), nil)
	if len(dup) != 1 || dup[0].Reason != ReasonDuplicate || !contains(dup[0].Message, "also held by Service kube/kubernetes") {
		t.Fatalf("a second holder: findings %v, want one %s naming the first holder", dup, ReasonDuplicate)
	}
	other := r.Observe(key("b", "stray"), ips("10.96.0.33"), noLabel)
	if len(other) != 1 || other[0].Reason != ReasonOtherPool || other[0].Pool != "team-a" {
		t.Fatalf("an address of a pool that does not select the namespace: findings %v, want %s in team-a", other, ReasonOtherPool)
	}
	if h, _ := r.HolderOf(netip.MustParseAddr("10.96.0.33")); h != key("b", "stray") {
		t.Fatalf("an address of another pool is still held: holder %v", h)
	}
	out := r.Observe(key("b", "far"), ips("10.200.0.1"), nil)
	if len(out) != 1 || out[0].Reason != ReasonOutOfRange || out[0].Pool != "default" {
		t.Fatalf("an address outside every pool: findings %v, want %s attributed to default", out, ReasonOutOfRange)
	}
	st, _ := r.Status("default", 1, nil)
	if c := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionConflicting); c == nil || c.Status != metav1.ConditionTrue ||
		st.Duplicates != 1 || st.OutOfRange != 1 {
		t.Fatalf("default pool: Conflicting %v, duplicates %d, out of range %d; want True, 1, 1", c, st.Duplicates, st.OutOfRange)
	}
	// The first holder goes: the twin keeps the address.
	r.Observe(key("kube", "kubernetes"), nil, nil)
	if h, _ := r.HolderOf(netip.MustParseAddr("10.96.0.1")); h != key("b", "twin") {
		t.Fatalf("after the first holder left, holder = %v, want b/twin", h)
	}
	r.Observe(key("b", "twin"), nil, nil)
	if _, held := r.HolderOf(netip.MustParseAddr("10.96.0.1")); held {
		t.Fatal("an address whose Services are gone is still held")
	}
	if _, err := r.Assign(AssignRequest{Service: key("b", "next"), Requested: ips("10.96.0.1")}); err != nil {
		t.Fatalf("a released address is free again: %v", err)
	}
}

func TestReservations(t *testing.T) {
	r, clock := newTestRegistry(t)
	got, err := r.Assign(AssignRequest{Service: key("a", ""), NamespaceLabels: teamA}) // generateName
	if err != nil {
		t.Fatal(err)
	}
	// The validating webhook sees the generated name; the reservation follows it.
	if err := r.Validate(key("a", "web-x7k2p"), got, nil, teamA, false); err != nil {
		t.Fatalf("Validate of a reserved address: %v", err)
	}
	if err := r.Validate(key("a", "other"), got, nil, teamA, false); !errors.Is(err, allocator.ErrAllocated) {
		t.Fatalf("Validate of an address reserved for another Service: %v, want %v", err, allocator.ErrAllocated)
	}
	// A Service that holds an IPv4 address is observed before its update lands: the
	// reservation is kept.
	r.Observe(key("a", "web-x7k2p"), nil, teamA)
	if r.Pending() != 1 {
		t.Fatalf("pending reservations = %d, want 1: Observe must not release a reservation", r.Pending())
	}
	clock.t = clock.t.Add(2 * time.Minute)
	expired := r.ExpiredReservations()
	if len(expired) != 1 || expired[0].Service != key("a", "web-x7k2p") {
		t.Fatalf("expired = %v, want the reservation of a/web-x7k2p", expired)
	}
	r.DropReservation(expired[0])
	if r.Pending() != 0 {
		t.Fatal("a dropped reservation is still pending")
	}
	if _, err := r.Assign(AssignRequest{Service: key("a", "y"), NamespaceLabels: teamA, Requested: got}); err != nil {
		t.Fatalf("a dropped reservation's address is free: %v", err)
	}
	// Validate of an address no webhook handed out (another webhook or the API server chose it).
	if err := r.Validate(key("b", "z"), ips("10.96.0.20"), nil, noLabel, false); err != nil {
		t.Fatalf("a free address chosen elsewhere: %v", err)
	}
	if err := r.Validate(key("b", "w"), ips("10.96.0.20"), nil, noLabel, false); !errors.Is(err, allocator.ErrAllocated) {
		t.Fatalf("the same address for another Service: %v", err)
	}
}

func TestRebuildGivesTheSameBitmaps(t *testing.T) {
	r, _ := newTestRegistry(t)
	type held struct {
		key    types.NamespacedName
		labels labels.Set
		ips    []netip.Addr
	}
	var services []held
	for i := range 20 {
		k, l := key("b", "svc"+string(rune('a'+i))), noLabel
		if i%4 == 0 {
			k, l = key("a", "svc"+string(rune('a'+i))), teamA
		}
		got, err := r.Assign(AssignRequest{Service: k, NamespaceLabels: l})
		if err != nil {
			t.Fatal(err)
		}
		r.Observe(k, got, l)
		services = append(services, held{k, l, got})
	}
	before, err := r.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	restarted, _ := newTestRegistry(t)
	for _, s := range services {
		restarted.Observe(s.key, s.ips, s.labels)
	}
	after, err := restarted.Snapshots()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Fatalf("bitmaps after a rebuild differ (-before +after):\n%s", diff)
	}
	// A pool spec change rebuilds from the holders and keeps every address held.
	r.SetPool(ptr.To(testPool("default", []string{"10.96.0.0/25"}, nil)))
	for _, s := range services {
		if h, ok := r.HolderOf(s.ips[0]); !ok || h != s.key {
			t.Fatalf("after growing the default pool, %s is held by %v, want %v", s.ips[0], h, s.key)
		}
	}
}

func TestIdenticalCIDRsConflict(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("a", []string{"10.96.0.0/24"}, nil),
		testPool("b", []string{"10.96.0.0/24"}, map[string]string{"team": "b"}),
	})
	st, _ := r.Status("b", 1, nil)
	if meta.IsStatusConditionTrue(st.Status.Conditions, ipamv1alpha1.ConditionReady) ||
		!meta.IsStatusConditionTrue(st.Status.Conditions, ipamv1alpha1.ConditionConflicting) {
		t.Fatalf("a pool with another pool's CIDR: conditions %v, want Ready=False and Conflicting=True", st.Status.Conditions)
	}
}

func TestAssignOnUpdateAndDryRun(t *testing.T) {
	r, _ := newTestRegistry(t)
	// A default-pool Service whose namespace is later labelled for team-a keeps its address on
	// update, though team-a does not own it and has no IPv6 CIDR for a PreferDualStack upgrade.
	got, err := r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: noLabel})
	if err != nil {
		t.Fatal(err)
	}
	r.Observe(key("b", "svc"), got, noLabel)
	prefer, require := corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack
	kept, err := r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: teamA, Policy: &prefer, Requested: got, Previous: got})
	if err != nil || !slices.Equal(kept, got) {
		t.Fatalf("update of a relabelled namespace's Service: %v, %v; want %v", kept, err, got)
	}
	if _, err := r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: teamA, Policy: &require, Requested: got, Previous: got}); err == nil {
		t.Fatal("RequireDualStack in a single-family pool was allowed on update")
	}
	r.SetPool(ptr.To(testPool("default", []string{"10.96.0.0/26", "fd00::/120"}, nil)))
	kept, err = r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: noLabel, Policy: &prefer, Requested: got, Previous: got, KeepFamilies: true})
	if err != nil || !slices.Equal(kept, got) {
		t.Fatalf("an unrelated update of a PreferDualStack Service: %v, %v; want %v and no new family", kept, err, got)
	}
	r.DeletePool("default")
	if _, err := r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: noLabel, Requested: got, Previous: got}); err != nil {
		t.Fatalf("an update that keeps its addresses in a namespace no pool selects: %v", err)
	}
	dry, err := r.Assign(AssignRequest{Service: key("a", "dry"), NamespaceLabels: teamA, DryRun: true})
	if err != nil || len(dry) != 1 || !netip.MustParsePrefix("10.96.0.32/29").Contains(dry[0]) {
		t.Fatalf("dry run: %v, %v; want an address of team-a", dry, err)
	}
	if _, err := r.Assign(AssignRequest{Service: key("a", "real"), NamespaceLabels: teamA, Requested: dry}); err != nil {
		t.Fatalf("a dry run's address stays free: %v", err)
	}
	if r.Pending() != 1 {
		t.Fatalf("pending = %d, want 1 (a/real's; none for the dry run)", r.Pending())
	}
}

func TestLargeNestedPoolIsSkipped(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("default", []string{"10.96.0.0/14"}, nil),
		testPool("big", []string{"10.96.0.0/15"}, map[string]string{"team": "a"}), // too large to carve
	})
	nested := netip.MustParsePrefix("10.96.0.0/15")
	for i := range 200 {
		got, err := r.Assign(AssignRequest{Service: key("b", "svc"+strings.Repeat("x", i))})
		if err != nil {
			t.Fatal(err)
		}
		if nested.Contains(got[0]) {
			t.Fatalf("the default pool handed out %s of the nested pool big", got[0])
		}
	}
	st, _ := r.Status("default", 1, nil)
	if st.Status.Families[0].Allocated != 200 {
		t.Fatalf("default allocated = %d, want 200 (skipped addresses are not counted)", st.Status.Families[0].Allocated)
	}
}

func TestQuarantine(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	pool := testPool("q", []string{"10.96.0.0/29"}, nil)
	pool.Spec.QuarantineSeconds = ptr.To[int32](3600)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{pool})
	var all []netip.Addr
	for i := range 6 {
		got, err := r.Assign(AssignRequest{Service: key("a", strings.Repeat("s", i+1))})
		if err != nil {
			t.Fatal(err)
		}
		r.Observe(key("a", strings.Repeat("s", i+1)), got, nil)
		all = append(all, got...)
	}
	r.Observe(key("a", "s"), nil, nil) // deleted: its address goes into quarantine
	if _, err := r.Assign(AssignRequest{Service: key("a", "new")}); !errors.Is(err, allocator.ErrFull) {
		t.Fatalf("dynamic allocation during quarantine: %v, want %v", err, allocator.ErrFull)
	}
	if _, err := r.Assign(AssignRequest{Service: key("a", "asks"), Requested: all[:1]}); err != nil {
		t.Fatalf("asking for a quarantined address: %v", err)
	}
}
