package endpoints

import (
	"bytes"
	"math"
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// MaxEndpointsAddresses is how many addresses an Endpoints object holds at most; beyond it the
// object is truncated and annotated with corev1.EndpointsOverCapacity, as upstream does.
const MaxEndpointsAddresses = 1000

// shouldSetHostname: a pod's hostname is published when its subdomain names the Service.
func shouldSetHostname(pod *corev1.Pod, svc *corev1.Service) bool {
	return pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name && svc.Namespace == pod.Namespace
}

func isServiceIPSet(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.ClusterIP != ""
}

func isIPv6(ip string) bool {
	parsed := net.ParseIP(ip)
	return parsed != nil && parsed.To4() == nil
}

// endpointsFamily is the one IP family an Endpoints object publishes: the Service's primary family.
func endpointsFamily(svc *corev1.Service, pod *corev1.Pod) corev1.IPFamily {
	switch {
	case len(svc.Spec.IPFamilies) > 0:
		return svc.Spec.IPFamilies[0]
	case isServiceIPSet(svc):
		if isIPv6(svc.Spec.ClusterIP) {
			return corev1.IPv6Protocol
		}
	case isIPv6(pod.Status.PodIP):
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

func podReference(pod *corev1.Pod) *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
}

// EndpointSubsets computes a selector Service's core/v1 Endpoints subsets from the pods its selector
// matches, in upstream's canonical (repacked, sorted) form and before truncation. Pods that cannot
// serve a port (a named targetPort they do not define) are left out of that port only.
func EndpointSubsets(svc *corev1.Service, pods []*corev1.Pod) []corev1.EndpointSubset {
	var subsets []corev1.EndpointSubset
	tolerateUnready := svc.Spec.PublishNotReadyAddresses
	for _, pod := range pods {
		if !endpointrules.Selects(svc, pod) || !endpointrules.ShouldPodBeInEndpoints(pod, tolerateUnready) {
			continue
		}
		ip, ok := endpointrules.PodIPOfFamily(pod, endpointsFamily(svc, pod))
		if !ok {
			continue
		}
		nodeName := pod.Spec.NodeName
		addr := corev1.EndpointAddress{IP: ip, NodeName: &nodeName, TargetRef: podReference(pod)}
		if shouldSetHostname(pod, svc) {
			addr.Hostname = pod.Spec.Hostname
		}
		ready := tolerateUnready || endpointrules.IsPodReady(pod)
		if len(svc.Spec.Ports) == 0 {
			if svc.Spec.ClusterIP == corev1.ClusterIPNone {
				subsets = append(subsets, singleAddressSubset(addr, nil, ready))
			}
			continue
		}
		for i := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[i]
			port, err := endpointrules.FindPort(pod, sp)
			if err != nil {
				continue
			}
			epp := corev1.EndpointPort{Name: sp.Name, Port: port, Protocol: endpointrules.ServicePortProtocol(sp), AppProtocol: sp.AppProtocol}
			subsets = append(subsets, singleAddressSubset(addr, &epp, ready))
		}
	}
	return RepackSubsets(subsets)
}

func singleAddressSubset(addr corev1.EndpointAddress, port *corev1.EndpointPort, ready bool) corev1.EndpointSubset {
	subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{}}
	if port != nil {
		subset.Ports = append(subset.Ports, *port)
	}
	if ready {
		subset.Addresses = []corev1.EndpointAddress{addr}
	} else {
		subset.NotReadyAddresses = []corev1.EndpointAddress{addr}
	}
	return subset
}

type addressKey struct {
	ip  string
	uid types.UID
}

// RepackSubsets rewrites subsets into upstream's canonical form: addresses that serve the same set
// of ports (with the same readiness) share one subset; an address ready on one port entry and not
// on another counts as not ready; addresses, ports and subsets are sorted as upstream sorts them.
func RepackSubsets(subsets []corev1.EndpointSubset) []corev1.EndpointSubset {
	addrs := map[addressKey]*corev1.EndpointAddress{}
	readyByPort := map[corev1.EndpointPort]map[*corev1.EndpointAddress]bool{}
	var portOrder []corev1.EndpointPort
	add := func(addr *corev1.EndpointAddress, port corev1.EndpointPort, ready bool) {
		key := addressKey{ip: addr.IP}
		if addr.TargetRef != nil {
			key.uid = addr.TargetRef.UID
		}
		shared := addrs[key]
		if shared == nil {
			shared = addr.DeepCopy()
			addrs[key] = shared
		}
		set, found := readyByPort[port]
		if !found {
			set = map[*corev1.EndpointAddress]bool{}
			readyByPort[port] = set
			portOrder = append(portOrder, port)
		}
		if wasReady, seen := set[shared]; !seen || wasReady {
			set[shared] = ready
		}
	}
	for i := range subsets {
		ports := subsets[i].Ports
		if len(ports) == 0 {
			ports = []corev1.EndpointPort{{Port: -1}} // sentinel: addresses without ports
		}
		for _, port := range ports {
			for j := range subsets[i].Addresses {
				add(&subsets[i].Addresses[j], port, true)
			}
			for j := range subsets[i].NotReadyAddresses {
				add(&subsets[i].NotReadyAddresses[j], port, false)
			}
		}
	}

	type group struct {
		set   map[*corev1.EndpointAddress]bool
		ports []corev1.EndpointPort
	}
	groups := map[string]*group{}
	var groupOrder []string
	for _, port := range portOrder {
		set := readyByPort[port]
		key := ""
		if len(portOrder) > 1 { // one port makes one group: no key to compare
			key = addressSetKey(set)
		}
		g, found := groups[key]
		if !found {
			g = &group{set: set}
			groups[key] = g
			groupOrder = append(groupOrder, key)
		}
		if port.Port > 0 {
			g.ports = append(g.ports, port)
		}
	}
	final := make([]corev1.EndpointSubset, 0, len(groups))
	for _, key := range groupOrder {
		g := groups[key]
		subset := corev1.EndpointSubset{Ports: g.ports}
		for addr, ready := range g.set {
			if ready {
				subset.Addresses = append(subset.Addresses, *addr)
			} else {
				subset.NotReadyAddresses = append(subset.NotReadyAddresses, *addr)
			}
		}
		final = append(final, subset)
	}
	return SortSubsets(final)
}

// addressSetKey identifies a set of (address, ready) pairs independently of map order.
func addressSetKey(set map[*corev1.EndpointAddress]bool) string {
	var b bytes.Buffer
	entries := make([]*corev1.EndpointAddress, 0, len(set))
	for addr := range set {
		entries = append(entries, addr)
	}
	sort.Slice(entries, func(i, j int) bool { return lessEndpointAddress(entries[i], entries[j]) })
	for _, addr := range entries {
		uid := types.UID("")
		if addr.TargetRef != nil {
			uid = addr.TargetRef.UID
		}
		b.WriteString(addr.IP)
		b.WriteByte('/')
		b.WriteString(string(uid))
		b.WriteByte('/')
		b.WriteString(strconv.FormatBool(set[addr]))
		b.WriteByte(';')
	}
	return b.String()
}

func lessEndpointAddress(a, b *corev1.EndpointAddress) bool {
	if c := bytes.Compare([]byte(a.IP), []byte(b.IP)); c != 0 {
		return c < 0
	}
	if b.TargetRef == nil {
		return false
	}
	if a.TargetRef == nil {
		return true
	}
	return a.TargetRef.UID < b.TargetRef.UID
}

// SortSubsets sorts addresses by IP then pod UID, ports and subsets by upstream's hash order.
func SortSubsets(subsets []corev1.EndpointSubset) []corev1.EndpointSubset {
	for i := range subsets {
		s := &subsets[i]
		sort.Slice(s.Addresses, func(a, b int) bool { return lessEndpointAddress(&s.Addresses[a], &s.Addresses[b]) })
		sort.Slice(s.NotReadyAddresses, func(a, b int) bool {
			return lessEndpointAddress(&s.NotReadyAddresses[a], &s.NotReadyAddresses[b])
		})
		sortByHash(s.Ports)
	}
	sortByHash(subsets)
	return subsets
}

func sortByHash[T any](items []T) {
	if len(items) < 2 {
		return // the common case (one port, one subset): nothing to hash
	}
	keys := make([]string, len(items))
	for i := range items {
		keys[i] = string(deepHash(items[i]))
	}
	sort.Sort(byKeys[T]{items: items, keys: keys})
}

type byKeys[T any] struct {
	items []T
	keys  []string
}

func (s byKeys[T]) Len() int           { return len(s.items) }
func (s byKeys[T]) Less(i, j int) bool { return s.keys[i] < s.keys[j] }
func (s byKeys[T]) Swap(i, j int) {
	s.items[i], s.items[j] = s.items[j], s.items[i]
	s.keys[i], s.keys[j] = s.keys[j], s.keys[i]
}

// TruncateSubsets keeps at most max addresses, ready ones first, spread over the subsets in
// proportion to their size (upstream's rule). It reports whether anything was dropped.
func TruncateSubsets(subsets []corev1.EndpointSubset, max int) ([]corev1.EndpointSubset, bool) {
	totalReady, totalNotReady := 0, 0
	for _, s := range subsets {
		totalReady += len(s.Addresses)
		totalNotReady += len(s.NotReadyAddresses)
	}
	if totalReady+totalNotReady <= max {
		return subsets, false
	}
	truncateReady := totalReady > max
	budget, total := max-totalReady, totalNotReady
	if truncateReady {
		budget, total = max, totalReady
	}
	left := budget
	out := make([]corev1.EndpointSubset, len(subsets))
	for i, s := range subsets {
		n := len(s.NotReadyAddresses)
		if truncateReady {
			n = len(s.Addresses)
		}
		keep := min(int(math.Ceil(float64(n)/float64(total)*float64(budget))), left)
		if truncateReady {
			s.Addresses = s.Addresses[:min(keep, len(s.Addresses))]
			s.NotReadyAddresses = []corev1.EndpointAddress{}
			left -= len(s.Addresses)
		} else {
			s.NotReadyAddresses = s.NotReadyAddresses[:min(keep, len(s.NotReadyAddresses))]
			left -= len(s.NotReadyAddresses)
		}
		out[i] = s
	}
	return out, true
}
