package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kube-clusterip/kube-clusterip/allocator"
)

// PoolCandidate is what pool choice needs to know of a pool.
type PoolCandidate struct {
	Name string
	// Selector matches the namespaces whose Services may use the pool; nil selects everything.
	Selector labels.Selector
	// Requirements is the number of matchLabels and matchExpressions of the selector; 0 means
	// the pool selects every namespace.
	Requirements int
}

// ChoosePool returns the pools whose selector matches a namespace's labels, most specific first:
// a non-empty selector beats an empty one, more requirements beat fewer, ties go by name. The
// first one is where the namespace's Services get dynamic addresses; any of them may hold an
// address a Service asks for.
func ChoosePool(pools []PoolCandidate, namespaceLabels labels.Set) []PoolCandidate {
	var matching []PoolCandidate
	for _, p := range pools {
		if p.Selector == nil || p.Selector.Matches(namespaceLabels) {
			matching = append(matching, p)
		}
	}
	sort.SliceStable(matching, func(i, j int) bool {
		if matching[i].Requirements != matching[j].Requirements {
			return matching[i].Requirements > matching[j].Requirements
		}
		return matching[i].Name < matching[j].Name
	})
	return matching
}

// WantFamilies returns the IP families a Service gets, primary first, following kube-apiserver's
// defaulting: a Service created without ipFamilyPolicy is SingleStack (the API server then
// refuses two ipFamilies or two clusterIPs itself); the primary family is ipFamilies[0], else the
// family of the first requested IP, else the pool's first family. poolFamilies are the families
// the pool has, in the order of its spec.cidrs; poolName is for messages.
func WantFamilies(policy *corev1.IPFamilyPolicy, ipFamilies []corev1.IPFamily, requested []netip.Addr,
	poolName string, poolFamilies []allocator.Family) ([]allocator.Family, error) {
	effective := corev1.IPFamilyPolicySingleStack
	if policy != nil {
		effective = *policy
	}
	has := func(f allocator.Family) bool {
		for _, pf := range poolFamilies {
			if pf == f {
				return true
			}
		}
		return false
	}
	var primary allocator.Family
	switch {
	case len(ipFamilies) > 0:
		primary = familyOf(ipFamilies[0])
	case len(requested) > 0:
		primary = allocator.FamilyOf(requested[0])
	case len(poolFamilies) > 0:
		primary = poolFamilies[0]
	}
	secondary := allocator.IPv6
	if primary == allocator.IPv6 {
		secondary = allocator.IPv4
	}
	// Each fault is checked, as kube-apiserver reports every one: the policy first, then the
	// families the pool lacks.
	fe := &FamilyError{}
	if effective == corev1.IPFamilyPolicyRequireDualStack && (!has(primary) || !has(secondary)) {
		fe.add(fmt.Sprintf("ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 address, but pool %s has only %s; "+
			"add a %s CIDR to the pool's spec.cidrs or use PreferDualStack", poolName, familiesString(poolFamilies), missingOf(primary, secondary, has)),
			field.NewPath("spec", "ipFamilyPolicy"), string(effective), upstreamNotDualStack)
	}
	if primary == 0 || !has(primary) {
		msg := fmt.Sprintf("pool %s has no %s CIDR (it has %s); ask for another ipFamilies, or add a %s CIDR to the pool's spec.cidrs",
			poolName, primary, familiesString(poolFamilies), primary)
		named := false
		for i, f := range ipFamilies {
			if !has(familyOf(f)) {
				fe.add(msg, field.NewPath("spec", "ipFamilies").Index(i), string(f), upstreamFamilyMissing)
				named = true
			}
		}
		if !named {
			fe.add(msg, nil, nil, "")
		}
	}
	if len(fe.causes) > 0 {
		return nil, fe
	}
	if effective != corev1.IPFamilyPolicySingleStack && has(secondary) {
		return []allocator.Family{primary, secondary}, nil
	}
	return []allocator.Family{primary}, nil
}

// FamilyError says why a Service's families cannot be served by its pool: each field of the
// Service that asks for what the pool lacks, with kube-apiserver's words for the same fault on a
// cluster without that family.
type FamilyError struct{ causes []familyCause }

type familyCause struct {
	msg      string
	field    *field.Path // nil: no field of the Service names the family (the pool has none)
	value    any
	upstream string
}

func (e *FamilyError) add(msg string, path *field.Path, value any, upstream string) {
	e.causes = append(e.causes, familyCause{msg: msg, field: path, value: value, upstream: upstream})
}

func (e *FamilyError) Error() string {
	msgs := make([]string, 0, len(e.causes))
	for _, c := range e.causes {
		if !slices.Contains(msgs, c.msg) {
			msgs = append(msgs, c.msg)
		}
	}
	return strings.Join(msgs, "; ")
}

// missingOf names the first of the two families the pool lacks.
func missingOf(primary, secondary allocator.Family, has func(allocator.Family) bool) allocator.Family {
	if !has(primary) {
		return primary
	}
	return secondary
}

func familyOf(f corev1.IPFamily) allocator.Family {
	switch f {
	case corev1.IPv4Protocol:
		return allocator.IPv4
	case corev1.IPv6Protocol:
		return allocator.IPv6
	}
	return 0
}

func ipFamilyOf(f allocator.Family) corev1.IPFamily {
	if f == allocator.IPv6 {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

func familiesString(fs []allocator.Family) string {
	switch len(fs) {
	case 0:
		return "no CIDR"
	case 1:
		return fs[0].String()
	}
	return fs[0].String() + " and " + fs[1].String()
}
