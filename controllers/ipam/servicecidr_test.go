package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// kubernetesCIDR is the ServiceCIDR kube-apiserver creates for --service-cluster-ip-range.
var kubernetesCIDR = ServiceCIDR{Name: "kubernetes", CIDRs: prefixes("10.96.0.0/26"), Ready: true}

func TestDefaultPoolFollowsServiceCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cidrs        []ServiceCIDR
		requested    string
		wantReason   string // "" when the requested address is granted
		wantFamilies []string
	}{
		{name: "an added ServiceCIDR extends the pool", requested: "10.200.0.5",
			cidrs:        []ServiceCIDR{kubernetesCIDR, {Name: "extra", CIDRs: prefixes("10.200.0.0/28"), Ready: true}},
			wantFamilies: []string{"10.96.0.0/26", "10.200.0.0/28"}},
		{name: "a ServiceCIDR being deleted hands out nothing new", requested: "10.200.0.5", wantReason: ReasonOutsideServiceCIDRs,
			cidrs:        []ServiceCIDR{kubernetesCIDR, {Name: "extra", CIDRs: prefixes("10.200.0.0/28"), Ready: false}},
			wantFamilies: []string{"10.96.0.0/26", "10.200.0.0/28"}},
		{name: "a ServiceCIDR around a pool shrunk on purpose adds nothing", requested: "10.96.0.5",
			cidrs:        []ServiceCIDR{kubernetesCIDR, {Name: "wide", CIDRs: prefixes("10.96.0.0/24"), Ready: true}},
			wantFamilies: []string{"10.96.0.0/26"}},
		{name: "a ServiceCIDR inside the pool adds nothing", requested: "10.96.0.5",
			cidrs:        []ServiceCIDR{kubernetesCIDR, {Name: "inner", CIDRs: prefixes("10.96.0.0/28"), Ready: true}},
			wantFamilies: []string{"10.96.0.0/26"}},
		{name: "without the ServiceCIDRs the pool came from, it hands out nothing", requested: "10.96.0.5", wantReason: ReasonOutsideServiceCIDRs,
			cidrs:        []ServiceCIDR{{Name: "extra", CIDRs: prefixes("10.200.0.0/28"), Ready: true}},
			wantFamilies: []string{"10.96.0.0/26", "10.200.0.0/28"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRegistry(t)
			r.SetServiceCIDRs(tc.cidrs)
			_, err := r.Assign(AssignRequest{Service: key("ns", "svc"), NamespaceLabels: noLabel, Requested: ips(tc.requested)})
			var ae *AdmissionError
			switch {
			case tc.wantReason == "" && err != nil:
				t.Fatalf("requested %s: %v", tc.requested, err)
			case tc.wantReason != "" && (!errors.As(err, &ae) || ae.Reason != tc.wantReason):
				t.Fatalf("requested %s: %v, want reason %s", tc.requested, err, tc.wantReason)
			}
			st, _ := r.Status("default", 1, nil)
			var got []string
			for _, f := range st.Status.Families {
				got = append(got, f.CIDR)
			}
			if !slices.Equal(got, tc.wantFamilies) {
				t.Fatalf("status families %v, want %v", got, tc.wantFamilies)
			}
		})
	}
}

// A Service keeps an address of a ServiceCIDR being deleted, and counts in the pool; new
// addresses come from the CIDRs the API server still accepts.
func TestServiceCIDRBeingDeletedKeepsItsServices(t *testing.T) {
	r, _ := newTestRegistry(t)
	extra := ServiceCIDR{Name: "extra", CIDRs: prefixes("10.200.0.0/28"), Ready: true}
	r.SetServiceCIDRs([]ServiceCIDR{kubernetesCIDR, extra})
	if f := r.Observe(key("ns", "old"), ips("10.200.0.3"), noLabel); len(f) != 0 {
		t.Fatalf("findings %v for an address of an added ServiceCIDR", f)
	}
	extra.Ready = false
	r.SetServiceCIDRs([]ServiceCIDR{kubernetesCIDR, extra})
	st, _ := r.Status("default", 1, nil)
	if st.Status.Allocated != 1 || st.OutOfRange != 0 {
		t.Fatalf("allocated %d, out of range %d; want the Service still counted", st.Status.Allocated, st.OutOfRange)
	}
	c := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs)
	if c == nil || c.Status != metav1.ConditionTrue || !contains(c.Message, "ServiceCIDR extra, which is being deleted") {
		t.Fatalf("condition %v, want OutsideServiceCIDRs True naming ServiceCIDR extra", c)
	}
	for i := range 60 {
		got, err := r.Assign(AssignRequest{Service: key("ns", "new-"+string(rune('a'+i))), NamespaceLabels: noLabel})
		if errors.Is(err, allocator.ErrFull) {
			break
		}
		if err != nil || netip.MustParsePrefix("10.200.0.0/28").Contains(got[0]) {
			t.Fatalf("dynamic address %v, %v: want one outside the ServiceCIDR being deleted", got, err)
		}
	}
}

// A tenant pool outside every ServiceCIDR says so, and its namespaces' Services are refused with
// the reason instead of being sent to the API server, or to another pool.
func TestPoolOutsideEveryServiceCIDR(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("default", []string{"10.96.0.0/26"}, nil),
		testPool("team-a", []string{"10.250.0.0/29"}, map[string]string{"team": "a"}),
	})
	r.SetServiceCIDRs([]ServiceCIDR{kubernetesCIDR})
	_, err := r.Assign(AssignRequest{Service: key("a", "svc"), NamespaceLabels: teamA})
	var ae *AdmissionError
	if !errors.As(err, &ae) || ae.Reason != ReasonOutsideServiceCIDRs || ae.Pool != "team-a" ||
		!contains(err.Error(), "10.250.0.0/29 lies outside every ServiceCIDR of the cluster (10.96.0.0/26)") {
		t.Fatalf("Assign in team-a: %v; want %s naming the CIDR and the ServiceCIDRs", err, ReasonOutsideServiceCIDRs)
	}
	st, _ := r.Status("team-a", 1, nil)
	ready := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionReady)
	outside := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs)
	if ready.Status != metav1.ConditionFalse || outside == nil || outside.Status != metav1.ConditionTrue {
		t.Fatalf("conditions %+v; want Ready False and OutsideServiceCIDRs True", st.Status.Conditions)
	}
	st, _ = r.Status("default", 1, nil)
	if c := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("default pool: %v, want OutsideServiceCIDRs False", c)
	}
	// An admin adds the ServiceCIDR: the pool hands out addresses at once.
	r.SetServiceCIDRs([]ServiceCIDR{kubernetesCIDR, {Name: "team-a", CIDRs: prefixes("10.250.0.0/24"), Ready: true}})
	got, err := r.Assign(AssignRequest{Service: key("a", "svc"), NamespaceLabels: teamA})
	if err != nil || !netip.MustParsePrefix("10.250.0.0/29").Contains(got[0]) {
		t.Fatalf("after the ServiceCIDR was added: %v, %v; want an address of team-a", got, err)
	}
}

// A ServiceCIDR that spans a tenant pool does not extend the default pool: the tenant's
// addresses, and the ones it reserves, stay its own.
func TestServiceCIDROverATenantPoolsReservedAddresses(t *testing.T) {
	r := NewRegistry(time.Minute, nil, nil)
	r.SetPools([]ipamv1alpha1.ClusterIPPool{
		testPool("default", []string{"10.96.0.0/26"}, nil),
		testPool("team-a", []string{"10.200.0.0/29"}, map[string]string{"team": "a"}, "10.200.0.1", "10.200.0.2"),
	})
	r.SetServiceCIDRs([]ServiceCIDR{kubernetesCIDR, {Name: "extra", CIDRs: prefixes("10.200.0.0/28"), Ready: true}})
	_, err := r.Assign(AssignRequest{Service: key("b", "svc"), NamespaceLabels: noLabel, Requested: ips("10.200.0.1")})
	if !errors.Is(err, allocator.ErrNotInRange) || !contains(err.Error(), "belongs to pool team-a") {
		t.Fatalf("another namespace asking for team-a's reserved address: %v", err)
	}
	_, err = r.Assign(AssignRequest{Service: key("a", "svc"), NamespaceLabels: teamA, Requested: ips("10.200.0.2")})
	if !errors.Is(err, allocator.ErrReserved) {
		t.Fatalf("team-a asking for its reserved address: %v, want ErrReserved", err)
	}
	for i := range 80 {
		got, err := r.Assign(AssignRequest{Service: key("b", "fill-"+string(rune('a'+i))), NamespaceLabels: noLabel})
		if errors.Is(err, allocator.ErrFull) {
			return
		}
		if err != nil || netip.MustParsePrefix("10.200.0.0/29").Contains(got[0]) {
			t.Fatalf("default pool handed out %v, %v: inside team-a", got, err)
		}
	}
	t.Fatal("the default pool never filled")
}

// A pool CIDR that no ServiceCIDR contains hands out from the Ready ServiceCIDRs inside it, as
// kube-apiserver accepts them: never the network or broadcast address of one, nothing outside.
func TestPoolAcrossServiceCIDRs(t *testing.T) {
	teamB := map[string]string{"team": "b"}
	for _, tc := range []struct {
		name         string
		poolCIDR     string // team-a's; default 10.250.0.0/27
		pools        []ipamv1alpha1.ClusterIPPool
		cidrs        []ServiceCIDR
		wantFamilies []string // team-a's status
		wantHandsOut int      // addresses team-a hands out before it is full
		refused      []string // requested in team-a, refused as outside the ServiceCIDRs
		wantOutside  string   // team-a's OutsideServiceCIDRs message contains it; "" when False
	}{
		{name: "two adjacent ServiceCIDRs: both, without their boundary addresses",
			cidrs:        []ServiceCIDR{{Name: "a", CIDRs: prefixes("10.250.0.0/28"), Ready: true}, {Name: "b", CIDRs: prefixes("10.250.0.16/28"), Ready: true}},
			wantFamilies: []string{"10.250.0.0/28", "10.250.0.16/28"}, wantHandsOut: 28,
			refused:     []string{"10.250.0.0", "10.250.0.15", "10.250.0.16", "10.250.0.31"},
			wantOutside: "10.250.0.0/27 lies in no single ServiceCIDR: only its addresses in the ServiceCIDRs 10.250.0.0/28, 10.250.0.16/28 are handed out"},
		{name: "partly inside a ServiceCIDR: that part only",
			cidrs:        []ServiceCIDR{{Name: "a", CIDRs: prefixes("10.250.0.0/28"), Ready: true}},
			wantFamilies: []string{"10.250.0.0/28"}, wantHandsOut: 14,
			refused:     []string{"10.250.0.15", "10.250.0.20"},
			wantOutside: "only its addresses in the ServiceCIDRs 10.250.0.0/28 are handed out"},
		{name: "nested ServiceCIDRs: the widest, its inner ones' boundaries included",
			cidrs: []ServiceCIDR{{Name: "wide", CIDRs: prefixes("10.250.0.0/28"), Ready: true},
				{Name: "inner", CIDRs: prefixes("10.250.0.0/29"), Ready: true}},
			wantFamilies: []string{"10.250.0.0/28"}, wantHandsOut: 14,
			refused:     []string{"10.250.0.16"},
			wantOutside: "only its addresses in the ServiceCIDRs 10.250.0.0/28 are"},
		{name: "a ServiceCIDR being deleted: not handed out from",
			cidrs: []ServiceCIDR{{Name: "a", CIDRs: prefixes("10.250.0.0/28"), Ready: true},
				{Name: "b", CIDRs: prefixes("10.250.0.16/28"), Ready: false}},
			wantFamilies: []string{"10.250.0.0/28"}, wantHandsOut: 14,
			refused:     []string{"10.250.0.20"},
			wantOutside: "only its addresses in the ServiceCIDRs 10.250.0.0/28 are"},
		{name: "a ServiceCIDR inside a narrower pool is that pool's",
			pools: []ipamv1alpha1.ClusterIPPool{testPool("team-b", []string{"10.250.0.16/28"}, teamB)},
			cidrs: []ServiceCIDR{{Name: "a", CIDRs: prefixes("10.250.0.0/28"), Ready: true},
				{Name: "b", CIDRs: prefixes("10.250.0.16/28"), Ready: true}},
			wantFamilies: []string{"10.250.0.0/28"}, wantHandsOut: 14,
			wantOutside: "only its addresses in the ServiceCIDRs 10.250.0.0/28 are"},
		{name: "IPv6, two adjacent ServiceCIDRs: both, without their network addresses (IPv6 has no broadcast)",
			poolCIDR: "fd00:250::/120",
			cidrs: []ServiceCIDR{{Name: "a", CIDRs: prefixes("fd00:250::/121"), Ready: true},
				{Name: "b", CIDRs: prefixes("fd00:250::80/121"), Ready: true}},
			wantFamilies: []string{"fd00:250::/121", "fd00:250::80/121"}, wantHandsOut: 254,
			refused:     []string{"fd00:250::", "fd00:250::80"},
			wantOutside: "fd00:250::/120 lies in no single ServiceCIDR"},
		{name: "inside one ServiceCIDR: one range, as before",
			cidrs:        []ServiceCIDR{{Name: "wide", CIDRs: prefixes("10.250.0.0/26"), Ready: true}, {Name: "a", CIDRs: prefixes("10.250.0.0/28"), Ready: true}},
			wantFamilies: []string{"10.250.0.0/27"}, wantHandsOut: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRegistry(time.Minute, nil, nil)
			r.SetPools(append([]ipamv1alpha1.ClusterIPPool{
				testPool("default", []string{"10.96.0.0/26"}, nil),
				testPool("team-a", []string{cmp.Or(tc.poolCIDR, "10.250.0.0/27")}, map[string]string{"team": "a"}),
			}, tc.pools...))
			r.SetServiceCIDRs(append([]ServiceCIDR{kubernetesCIDR}, tc.cidrs...))

			for _, ip := range tc.refused {
				_, err := r.Assign(AssignRequest{Service: key("a", "asks-"+ip), NamespaceLabels: teamA, Requested: ips(ip)})
				if !errors.Is(err, allocator.ErrNotInRange) {
					t.Errorf("requested %s: %v, want ErrNotInRange", ip, err)
				}
				handedOutFrom := slices.ContainsFunc(tc.wantFamilies, func(c string) bool { return netip.MustParsePrefix(c).Contains(netip.MustParseAddr(ip)) })
				var ae *AdmissionError
				if !handedOutFrom && (!errors.As(err, &ae) || ae.Reason != ReasonOutsideServiceCIDRs || ae.Pool != "team-a") {
					t.Errorf("requested %s, outside the ServiceCIDRs team-a hands out from: %v, want %s of team-a", ip, err, ReasonOutsideServiceCIDRs)
				}
			}
			handedOut := map[netip.Addr]bool{}
			for i := range 300 {
				got, err := r.Assign(AssignRequest{Service: key("a", fmt.Sprintf("svc-%d", i)), NamespaceLabels: teamA})
				if errors.Is(err, allocator.ErrFull) {
					break
				}
				if err != nil {
					t.Fatalf("dynamic #%d: %v", i, err)
				}
				if slices.Contains(tc.refused, got[0].String()) || handedOut[got[0]] {
					t.Fatalf("dynamic #%d handed out %s (refused when requested, or handed out before)", i, got[0])
				}
				handedOut[got[0]] = true
			}
			if len(handedOut) != tc.wantHandsOut {
				t.Errorf("handed out %d addresses, want %d", len(handedOut), tc.wantHandsOut)
			}

			st, _ := r.Status("team-a", 1, nil)
			var families []string
			for _, f := range st.Status.Families {
				families = append(families, f.CIDR)
			}
			if !slices.Equal(families, tc.wantFamilies) {
				t.Errorf("status families %v, want %v", families, tc.wantFamilies)
			}
			if !meta.IsStatusConditionTrue(st.Status.Conditions, ipamv1alpha1.ConditionReady) {
				t.Errorf("Ready: %+v, want True", meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionReady))
			}
			outside := meta.FindStatusCondition(st.Status.Conditions, ipamv1alpha1.ConditionOutsideServiceCIDRs)
			switch {
			case tc.wantOutside == "" && outside.Status != metav1.ConditionFalse:
				t.Errorf("OutsideServiceCIDRs: %+v, want False", outside)
			case tc.wantOutside != "" && (outside.Status != metav1.ConditionTrue || !contains(outside.Message, tc.wantOutside)):
				t.Errorf("OutsideServiceCIDRs: %+v, want True saying %q", outside, tc.wantOutside)
			}
		})
	}
}
