package ipam

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

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
	if primary == 0 || !has(primary) {
		return nil, &FamilyError{msg: fmt.Sprintf("pool %s has no %s CIDR (it has %s); ask for another ipFamilies, "+
			"or add a %s CIDR to the pool's spec.cidrs", poolName, primary, familiesString(poolFamilies), primary)}
	}
	secondary := allocator.IPv6
	if primary == allocator.IPv6 {
		secondary = allocator.IPv4
	}
	switch effective {
	case corev1.IPFamilyPolicyRequireDualStack:
		if !has(secondary) {
			return nil, &FamilyError{msg: fmt.Sprintf("ipFamilyPolicy RequireDualStack needs an IPv4 and an IPv6 address, "+
				"but pool %s has only %s; add a %s CIDR to the pool's spec.cidrs or use PreferDualStack", poolName,
				familiesString(poolFamilies), secondary)}
		}
		return []allocator.Family{primary, secondary}, nil
	case corev1.IPFamilyPolicyPreferDualStack:
		if has(secondary) {
			return []allocator.Family{primary, secondary}, nil
		}
	}
	return []allocator.Family{primary}, nil
}

// FamilyError says why a Service's families cannot be served by its pool.
type FamilyError struct{ msg string }

func (e *FamilyError) Error() string { return e.msg }

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
