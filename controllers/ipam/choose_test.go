package ipam

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kube-clusterip/kube-clusterip/allocator"
)

func candidate(t *testing.T, name string, sel *metav1.LabelSelector) PoolCandidate {
	t.Helper()
	c := PoolCandidate{Name: name}
	if sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		c.Selector, c.Requirements = s, len(sel.MatchLabels)+len(sel.MatchExpressions)
	}
	return c
}

func TestChoosePool(t *testing.T) {
	teamA := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	teamAProd := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a", "env": "prod"}}
	notB := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"b"}}}}
	tests := []struct {
		name   string
		pools  map[string]*metav1.LabelSelector
		labels labels.Set
		want   []string
	}{
		{name: "only the default pool", pools: map[string]*metav1.LabelSelector{"default": nil},
			labels: labels.Set{"team": "a"}, want: []string{"default"}},
		{name: "a matching selector beats the empty one", pools: map[string]*metav1.LabelSelector{"default": nil, "team-a": teamA},
			labels: labels.Set{"team": "a"}, want: []string{"team-a", "default"}},
		{name: "an empty selector object selects every namespace",
			pools:  map[string]*metav1.LabelSelector{"all": {}, "team-a": teamA},
			labels: labels.Set{"team": "b"}, want: []string{"all"}},
		{name: "a selector that does not match is skipped", pools: map[string]*metav1.LabelSelector{"default": nil, "team-a": teamA},
			labels: labels.Set{"team": "b"}, want: []string{"default"}},
		{name: "more requirements beat fewer", pools: map[string]*metav1.LabelSelector{"team-a": teamA, "team-a-prod": teamAProd, "default": nil},
			labels: labels.Set{"team": "a", "env": "prod"}, want: []string{"team-a-prod", "team-a", "default"}},
		{name: "ties go by name", pools: map[string]*metav1.LabelSelector{"zeta": teamA, "alpha": notB},
			labels: labels.Set{"team": "a"}, want: []string{"alpha", "zeta"}},
		{name: "no pool selects the namespace", pools: map[string]*metav1.LabelSelector{"team-a": teamA},
			labels: nil, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cands []PoolCandidate
			for name, sel := range tt.pools {
				cands = append(cands, candidate(t, name, sel))
			}
			var got []string
			for _, c := range ChoosePool(cands, tt.labels) {
				got = append(got, c.Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ChoosePool() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWantFamilies(t *testing.T) {
	single, prefer, require := corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack
	v4, v6 := allocator.IPv4, allocator.IPv6
	both, v6First, only4, only6 := []allocator.Family{v4, v6}, []allocator.Family{v6, v4}, []allocator.Family{v4}, []allocator.Family{v6}
	tests := []struct {
		name       string
		policy     *corev1.IPFamilyPolicy
		ipFamilies []corev1.IPFamily
		requested  []string
		pool       []allocator.Family
		want       []allocator.Family
		wantErr    string
	}{
		{name: "no policy is single-stack in the pool's first family", pool: v6First, want: only6},
		{name: "SingleStack follows ipFamilies", policy: &single, ipFamilies: []corev1.IPFamily{corev1.IPv6Protocol}, pool: both, want: only6},
		{name: "SingleStack follows the requested IP's family", policy: &single, requested: []string{"fd00::5"}, pool: both, want: only6},
		{name: "SingleStack in a family the pool lacks is refused", policy: &single, ipFamilies: []corev1.IPFamily{corev1.IPv6Protocol},
			pool: only4, wantErr: "pool p has no IPv6 CIDR (it has IPv4)"},
		{name: "PreferDualStack gets both when the pool has both", policy: &prefer, pool: both, want: both},
		{name: "PreferDualStack puts ipFamilies[0] first", policy: &prefer, ipFamilies: []corev1.IPFamily{corev1.IPv6Protocol}, pool: both, want: v6First},
		{name: "PreferDualStack falls back to one family", policy: &prefer, pool: only4, want: only4},
		{name: "RequireDualStack gets both", policy: &require, pool: both, want: both},
		{name: "RequireDualStack in a single-family pool is refused", policy: &require, pool: only4,
			wantErr: "ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 address, but pool p has only IPv4"},
		{name: "two ipFamilies without a policy are SingleStack, as kube-apiserver defaults them",
			ipFamilies: []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}, pool: both, want: only6},
		{name: "two requested IPs without a policy are SingleStack", requested: []string{"10.96.0.10", "fd00::10"}, pool: both, want: only4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var requested []netip.Addr
			for _, s := range tt.requested {
				requested = append(requested, netip.MustParseAddr(s))
			}
			got, err := WantFamilies(tt.policy, tt.ipFamilies, requested, "p", tt.pool)
			if tt.wantErr != "" {
				if err == nil || !contains(err.Error(), tt.wantErr) {
					t.Fatalf("WantFamilies() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("WantFamilies() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("WantFamilies() (-want +got):\n%s", diff)
			}
		})
	}
}
