package endpointrules

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// NearMiss is a pod whose labels would match the selector if one label were different.
type NearMiss struct {
	Pod *corev1.Pod
	// Label is the pod's label in place of the wanted one ("app=backnd"); empty when it lacks one.
	Label string
	// Wanted is the selector's label the pod misses ("app=backend").
	Wanted string
}

// Describe says how the pod (or, plural, the pods) misses the selector:
// `has app=backnd (selector wants app=backend)`.
func (m NearMiss) Describe(plural bool) string {
	has, lacks := "has", "lacks"
	if plural {
		has, lacks = "have", "lack"
	}
	if m.Label == "" {
		key, _, _ := strings.Cut(m.Wanted, "=")
		return fmt.Sprintf("%s label %s (selector wants %s)", lacks, key, m.Wanted)
	}
	return fmt.Sprintf("%s %s (selector wants %s)", has, m.Label, m.Wanted)
}

// NearMisses are the pods of the Service's namespace that one differing label keeps out of the
// selector: a value or key that is one typo away (`app: backnd`, `ap: backend`), or, for selectors
// of several labels, one label missing or with another value while the rest match.
func NearMisses(svc *corev1.Service, pods []*corev1.Pod) []NearMiss {
	if !HasSelector(svc) {
		return nil
	}
	var misses []NearMiss
	for _, pod := range pods {
		if pod.Namespace != svc.Namespace || Selects(svc, pod) {
			continue
		}
		if label, wanted, ok := oneLabelOff(svc.Spec.Selector, pod.Labels); ok {
			misses = append(misses, NearMiss{Pod: pod, Label: label, Wanted: wanted})
		}
	}
	return misses
}

// oneLabelOff finds the one selector label the pod's labels miss, and the pod's label in its place
// (empty when the pod lacks it), when that miss is near enough to be a likely mistake.
func oneLabelOff(selector, podLabels map[string]string) (label, wanted string, ok bool) {
	var missedKey string
	for key, want := range selector {
		if podLabels[key] != want || !hasKey(podLabels, key) {
			if missedKey != "" {
				return "", "", false
			}
			missedKey = key
		}
	}
	want := selector[missedKey]
	wanted = missedKey + "=" + want
	if got, ok := podLabels[missedKey]; ok {
		return missedKey + "=" + got, wanted, len(selector) > 1 || similar(got, want)
	}
	for _, key := range slices.Sorted(maps.Keys(podLabels)) {
		if podLabels[key] == want && similar(key, missedKey) {
			return key + "=" + want, wanted, true
		}
	}
	return "", wanted, len(selector) > 1
}

func hasKey(m map[string]string, key string) bool {
	_, ok := m[key]
	return ok
}

// similar says whether two strings are one typo apart: equal but for case, or at most two edits
// (and fewer than half the characters) away.
func similar(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	d := editDistance(a, b)
	return d <= 2 && 2*d < max(len(a), len(b))
}

// editDistance is the Levenshtein distance between two strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// SelectorMatchesNoPod reports a Service whose selector matches none of the pods of its namespace,
// naming the closest near miss (a pod one label off) when there is one. podsInNamespace are the
// pods of the Service's namespace. Selectorless Services never match pods by design: not found.
func SelectorMatchesNoPod(svc *corev1.Service, podsInNamespace []*corev1.Pod) (message string, found bool) {
	if !HasSelector(svc) || len(SelectedPods(svc, podsInNamespace)) > 0 {
		return "", false
	}
	message = fmt.Sprintf("selector %s matches no pod in namespace %s", SelectorString(svc.Spec.Selector), svc.Namespace)
	if misses := NearMisses(svc, podsInNamespace); len(misses) > 0 {
		message += "; closest: " + DescribeNearMisses(misses)
	}
	return message, true
}

// DescribeNearMisses groups near misses by their differing label: "pods a, b have app=backnd (...)".
func DescribeNearMisses(misses []NearMiss) string {
	type group struct {
		miss  NearMiss
		names []string
	}
	var groups []*group
	byDiff := map[[2]string]*group{}
	for _, m := range misses {
		g := byDiff[[2]string{m.Label, m.Wanted}]
		if g == nil {
			g = &group{miss: m}
			byDiff[[2]string{m.Label, m.Wanted}] = g
			groups = append(groups, g)
		}
		g.names = append(g.names, m.Pod.Name)
	}
	parts := make([]string, 0, len(groups))
	for _, g := range groups {
		noun := "pod "
		if len(g.names) > 1 {
			noun = "pods "
		}
		parts = append(parts, noun+NameList(g.names)+" "+g.miss.Describe(len(g.names) > 1))
	}
	return strings.Join(parts, "; ")
}

// SelectorString renders a selector as kubectl does: "app=backend,tier=web".
func SelectorString(selector map[string]string) string {
	return labels.SelectorFromSet(selector).String()
}

// NameList joins names, eliding after five: "a, b, c, d, e and 3 more".
func NameList(names []string) string {
	const shown = 5
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:shown], ", "), len(names)-shown)
}

func PodNames(pods []*corev1.Pod) []string {
	names := make([]string, 0, len(pods))
	for _, pod := range pods {
		names = append(names, pod.Name)
	}
	return names
}
