package ipam

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/allocator"
)

func TestRefusalIsWordedAsKubeAPIServers(t *testing.T) {
	svc := func(policy corev1.IPFamilyPolicy, families []corev1.IPFamily, ips ...string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}}
		s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = ptr.To(policy), families
		if len(ips) > 0 {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips
		}
		return s
	}
	familyError := func(pool string, policy corev1.IPFamilyPolicy, families ...corev1.IPFamily) *AdmissionError {
		_, err := WantFamilies(ptr.To(policy), families, nil, pool, []allocator.Family{allocator.IPv4})
		return &AdmissionError{Reason: ReasonFamily, Pool: pool, Err: err}
	}
	ip := netip.MustParseAddr
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	type cause struct{ field, prefix string }
	cases := []struct {
		name   string
		svc    *corev1.Service
		err    *AdmissionError
		code   int32
		reason metav1.StatusReason
		causes []cause
		says   string // in the message
	}{{
		name: "a requested address another Service holds",
		svc:  svc(corev1.IPFamilyPolicySingleStack, nil, "10.96.0.10"),
		err: &AdmissionError{Reason: ReasonAllocated, Pool: "default", IP: ip("10.96.0.10"),
			Err: fmt.Errorf("%w: 10.96.0.10 in pool default is held by Service a/b", allocator.ErrAllocated)},
		code: http.StatusUnprocessableEntity, reason: metav1.StatusReasonInvalid,
		causes: []cause{{"spec.clusterIPs", `Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated: 10.96.0.10 in pool default is held by Service a/b`}},
	}, {
		name: "a requested address outside every pool",
		svc:  svc(corev1.IPFamilyPolicySingleStack, nil, "10.200.0.1"),
		err: &AdmissionError{Reason: ReasonOutOfRange, IP: ip("10.200.0.1"),
			Err: fmt.Errorf("%w: 10.200.0.1 is outside every pool", allocator.ErrNotInRange)},
		code: http.StatusUnprocessableEntity, reason: metav1.StatusReasonInvalid,
		causes: []cause{{"spec.clusterIPs", `Invalid value: ["10.200.0.1"]: failed to allocate IP 10.200.0.1: the provided network does not match the current range: provided IP`}},
	}, {
		name: "a requested address of a family no pool has",
		svc:  svc(corev1.IPFamilyPolicyRequireDualStack, nil, "10.96.0.10", "fd00::10"),
		err:  &AdmissionError{Reason: ReasonFamily, Pool: "default", IP: ip("fd00::10"), Err: fmt.Errorf("no pool has an IPv6 CIDR")},
		code: http.StatusUnprocessableEntity, reason: metav1.StatusReasonInvalid,
		causes: []cause{{"spec.clusterIPs[1]", `Invalid value: ["10.96.0.10","fd00::10"]: IPv6 is not configured on this cluster: no pool`}},
	}, {
		name: "RequireDualStack, IPv6 first, from the default pool of an IPv4 cluster",
		svc:  svc(corev1.IPFamilyPolicyRequireDualStack, []corev1.IPFamily{v6, v4}),
		err:  familyError("default", corev1.IPFamilyPolicyRequireDualStack, v6, v4),
		code: http.StatusUnprocessableEntity, reason: metav1.StatusReasonInvalid,
		causes: []cause{
			{"spec.ipFamilyPolicy", `Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services: ipFamilyPolicy RequireDualStack needs`},
			{"spec.ipFamilies[0]", `Invalid value: "IPv6": not configured on this cluster: pool default has no IPv6 CIDR`},
		},
	}, {
		name: "IPv6 from a tenant pool without it: the pool, not the cluster, lacks it",
		svc:  svc(corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{v6}),
		err:  familyError("team-a", corev1.IPFamilyPolicySingleStack, v6),
		code: http.StatusUnprocessableEntity, reason: metav1.StatusReasonInvalid,
		causes: []cause{{"spec.ipFamilies[0]", `Invalid value: "IPv6": pool team-a has no IPv6 CIDR`}},
	}, {
		name: "a full pool",
		svc:  svc(corev1.IPFamilyPolicySingleStack, nil),
		err:  &AdmissionError{Reason: ReasonFull, Pool: "default", Err: fmt.Errorf("%w: pool default has no free IPv4 address", allocator.ErrFull)},
		code: http.StatusInternalServerError, reason: metav1.StatusReasonInternalError,
		says:   `failed to allocate a serviceIP for Service "s": range is full: pool default`,
		causes: []cause{{"", `failed to allocate a serviceIP for Service "s": range is full`}},
	}, {
		name: "a namespace no pool selects, which upstream never refuses",
		svc:  svc(corev1.IPFamilyPolicySingleStack, nil),
		err:  &AdmissionError{Reason: ReasonNoPool, Err: fmt.Errorf("no ClusterIPPool selects namespace x")},
		code: http.StatusForbidden, reason: metav1.StatusReasonForbidden,
		says: "no ClusterIPPool selects namespace x",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := refusal(tc.svc, tc.err)
			if resp.Allowed || resp.Result == nil {
				t.Fatalf("allowed %v, result %v; want a refusal", resp.Allowed, resp.Result)
			}
			st := resp.Result
			if st.Code != tc.code || st.Reason != tc.reason {
				t.Errorf("status %d %s; want %d %s", st.Code, st.Reason, tc.code, tc.reason)
			}
			if !strings.Contains(st.Message, tc.says) {
				t.Errorf("message %q does not say %q", st.Message, tc.says)
			}
			var got []metav1.StatusCause
			if st.Details != nil {
				got = st.Details.Causes
			}
			if len(got) != len(tc.causes) {
				t.Fatalf("causes %+v; want %d", got, len(tc.causes))
			}
			for i, c := range tc.causes {
				if got[i].Field != c.field || !strings.HasPrefix(got[i].Message, c.prefix) {
					t.Errorf("cause %d: %s %q; want %s starting %q", i+1, got[i].Field, got[i].Message, c.field, c.prefix)
				}
			}
		})
	}
}
