package reliability

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/controllers/endpoints"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/fuzzbytes"
)

// FuzzEndpoints feeds random Services and pods to the endpoints computation (EndpointSubsets,
// DesiredEndpointGroups, PlanEndpointSlices) and checks that it never panics and that:
//   - every address it publishes (Endpoints or EndpointSlices) is an IP of a pod the Service
//     selects, with its TargetRef naming that pod;
//   - no EndpointSlice holds more than the maximum number of endpoints;
//   - a ready, running, non-terminating pod with an IP, on a known node, is published as ready
//     in both APIs (when the Service's target ports are numeric, so every pod serves them), and
//     a pod that is not ready is never published as ready;
//   - applying the plan and planning again writes nothing (no write for a no-op).
//
// The seed corpus is in testdata/fuzz/FuzzEndpoints.
func FuzzEndpoints(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x01\x02\x00\x05\x01\x01\x01\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{Reader: fuzzbytes.New(data)}
		svc, maxPerSlice := in.service()
		pods, nodes := in.pods(svc.Namespace)

		subsets := endpoints.EndpointSubsets(svc, pods)
		groups, _ := endpoints.DesiredEndpointGroups(svc, pods, nodes)
		trigger := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		plan := endpoints.PlanEndpointSlices(svc, groups, nil, maxPerSlice, trigger)

		podsByIP := map[string][]*corev1.Pod{}
		for _, p := range pods {
			for _, ip := range p.Status.PodIPs {
				podsByIP[ip.IP] = append(podsByIP[ip.IP], p)
			}
		}
		fromSelectedPod := func(ip string, ref *corev1.ObjectReference, what string) {
			t.Helper()
			for _, p := range podsByIP[ip] {
				if labelsMatch(svc.Spec.Selector, p.Labels) && (ref == nil || ref.Name == p.Name) {
					return
				}
			}
			t.Fatalf("%s: address %s (targetRef %v) is not an IP of a pod the Service selects", what, ip, ref)
		}

		epReady, epNotReady := map[string]bool{}, map[string]bool{}
		for _, s := range subsets {
			for _, a := range s.Addresses {
				fromSelectedPod(a.IP, a.TargetRef, "Endpoints ready address")
				epReady[a.IP] = true
			}
			for _, a := range s.NotReadyAddresses {
				fromSelectedPod(a.IP, a.TargetRef, "Endpoints not-ready address")
				epNotReady[a.IP] = true
			}
		}
		sliceReady := map[string]bool{}
		for _, s := range plan.Create {
			if len(s.Endpoints) > maxPerSlice {
				t.Fatalf("EndpointSlice with %d endpoints, more than the maximum %d", len(s.Endpoints), maxPerSlice)
			}
			for _, e := range s.Endpoints {
				var ref *corev1.ObjectReference
				if e.TargetRef != nil {
					ref = &corev1.ObjectReference{Name: e.TargetRef.Name}
				}
				for _, ip := range e.Addresses {
					fromSelectedPod(ip, ref, "EndpointSlice endpoint")
					if ptr.Deref(e.Conditions.Ready, true) {
						sliceReady[ip] = true
					}
				}
			}
		}

		numeric := len(svc.Spec.Ports) > 0
		for _, p := range svc.Spec.Ports {
			numeric = numeric && p.TargetPort.Type == intstr.Int
		}
		families := map[corev1.IPFamily]bool{}
		for _, at := range endpoints.AddressTypes(svc) {
			families[corev1.IPFamily(at)] = true
		}
		ambiguous := map[string]bool{} // IPs that pods of different readiness share
		for ip, ps := range podsByIP {
			for _, p := range ps {
				if servesReady(p) != servesReady(ps[0]) || !labelsMatch(svc.Spec.Selector, p.Labels) {
					ambiguous[ip] = true
				}
			}
		}
		for _, p := range pods {
			if !labelsMatch(svc.Spec.Selector, p.Labels) {
				continue
			}
			inEndpoints := false // Endpoints publish one IP per pod, of the Service's primary family
			for _, podIP := range p.Status.PodIPs {
				ip := podIP.IP
				if ambiguous[ip] {
					inEndpoints = true // not checked
					continue
				}
				inEndpoints = inEndpoints || epReady[ip] ||
					(len(svc.Spec.IPFamilies) > 0 && familyOf(ip) != svc.Spec.IPFamilies[0])
				if !servesReady(p) {
					if !svc.Spec.PublishNotReadyAddresses && (epReady[ip] || sliceReady[ip]) {
						t.Fatalf("pod %s (%s) is not ready but published as ready", p.Name, ip)
					}
					continue
				}
				_, known := nodes[p.Spec.NodeName]
				if numeric && known && families[familyOf(ip)] && !sliceReady[ip] {
					t.Fatalf("ready pod %s (%s) on a known node is not a ready endpoint of the EndpointSlices", p.Name, ip)
				}
			}
			if servesReady(p) && numeric && len(p.Status.PodIPs) > 0 && !inEndpoints {
				t.Fatalf("ready pod %s (%v) is not a ready address of the Endpoints: %+v", p.Name, p.Status.PodIPs, subsets)
			}
		}

		// Applying the plan, then planning again, writes nothing.
		var existing []*discoveryv1.EndpointSlice
		for i, s := range plan.Create {
			s = s.DeepCopy()
			s.Name = fmt.Sprintf("%s%d", s.GenerateName, i)
			s.ResourceVersion = "1"
			existing = append(existing, s)
		}
		if again := endpoints.PlanEndpointSlices(svc, groups, existing, maxPerSlice, trigger); !again.Empty() {
			t.Fatalf("planning again after applying the plan writes %d creates, %d updates, %d deletes",
				len(again.Create), len(again.Update), len(again.Delete))
		}
	})
}

// servesReady says whether a pod should be published as ready.
func servesReady(p *corev1.Pod) bool {
	return endpointrules.IsPodReady(p) && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded &&
		p.Status.Phase != corev1.PodFailed
}

func labelsMatch(selector, labels map[string]string) bool {
	if selector == nil {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func familyOf(ip string) corev1.IPFamily {
	if netip.MustParseAddr(ip).Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

var (
	fuzzLabelValues = []string{"a", "b"}
	fuzzPortNames   = []string{"http", "metrics", ""}
)

// fuzzInput turns fuzz bytes into objects.
type fuzzInput struct{ *fuzzbytes.Reader }

// service returns a Service in namespace "ns" with a selector of one or two keys, up to three
// ports, and its families; and the maximum endpoints per slice (1 to 4).
func (in *fuzzInput) service() (*corev1.Service, int) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", UID: types.UID("svc-uid")},
		Spec: corev1.ServiceSpec{
			Selector:                 map[string]string{"app": fuzzLabelValues[in.Intn(2)]},
			PublishNotReadyAddresses: in.Intn(4) == 0,
		},
	}
	if in.Bool() {
		svc.Spec.Selector["tier"] = fuzzLabelValues[in.Intn(2)]
	}
	switch in.Intn(4) {
	case 0:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		svc.Spec.ClusterIPs = []string{"fd00:10:96::10"}
	case 1:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		svc.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:10:96::10"}
	case 2:
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	default:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		svc.Spec.ClusterIPs = []string{"10.96.0.10"}
	}
	if len(svc.Spec.ClusterIPs) > 0 && svc.Spec.ClusterIP == "" {
		svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	}
	for i := range in.Intn(4) {
		port := corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: int32(80 + i), Protocol: corev1.ProtocolTCP}
		if in.Bool() {
			port.Protocol = corev1.ProtocolUDP
		}
		if name := fuzzPortNames[in.Intn(3)]; name != "" && in.Bool() {
			port.TargetPort = intstr.FromString(name)
		} else {
			port.TargetPort = intstr.FromInt32(int32(8000 + in.Intn(3)))
		}
		svc.Spec.Ports = append(svc.Spec.Ports, port)
	}
	return svc, 1 + in.Intn(4)
}

// pods returns up to 24 pods in namespace with random labels, IPs (shared among pods on
// purpose), phases, readiness, deletion and nodes; and the nodes that exist (node-0, node-1).
func (in *fuzzInput) pods(namespace string) ([]*corev1.Pod, map[string]*corev1.Node) {
	nodes := map[string]*corev1.Node{}
	for _, name := range []string{"node-0", "node-1"} {
		nodes[name] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{corev1.LabelTopologyZone: "zone-" + name}}}
	}
	var pods []*corev1.Pod
	for i := range in.Intn(25) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("pod-%d", i),
				UID: types.UID(fmt.Sprintf("uid-%d", i)), Labels: map[string]string{}},
			Spec: corev1.PodSpec{NodeName: []string{"node-0", "node-1", "", "node-gone"}[in.Intn(4)]},
		}
		if in.Intn(4) != 0 {
			p.Labels["app"] = fuzzLabelValues[in.Intn(2)]
		}
		if in.Bool() {
			p.Labels["tier"] = fuzzLabelValues[in.Intn(2)]
		}
		for _, name := range fuzzPortNames[:2] {
			if in.Bool() {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c-" + name,
					Ports: []corev1.ContainerPort{{Name: name, ContainerPort: int32(9000 + in.Intn(3)), Protocol: corev1.ProtocolTCP}}})
			}
		}
		switch in.Intn(4) {
		case 0: // no IP yet
		case 1:
			p.Status.PodIPs = []corev1.PodIP{{IP: fmt.Sprintf("fd00:10:244::%x", in.Intn(8)+1)}}
		case 2:
			p.Status.PodIPs = []corev1.PodIP{{IP: fmt.Sprintf("10.244.0.%d", in.Intn(8)+1)},
				{IP: fmt.Sprintf("fd00:10:244::%x", in.Intn(8)+1)}}
		default:
			p.Status.PodIPs = []corev1.PodIP{{IP: fmt.Sprintf("10.244.0.%d", in.Intn(8)+1)}}
		}
		if len(p.Status.PodIPs) > 0 {
			p.Status.PodIP = p.Status.PodIPs[0].IP
		}
		p.Status.Phase = []corev1.PodPhase{corev1.PodRunning, corev1.PodRunning, corev1.PodPending,
			corev1.PodSucceeded, corev1.PodFailed}[in.Intn(5)]
		switch in.Intn(3) {
		case 0:
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		case 1:
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
		}
		if in.Intn(6) == 0 {
			p.DeletionTimestamp = &metav1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		}
		if in.Intn(4) == 0 {
			p.Spec.Hostname, p.Spec.Subdomain = p.Name, "svc"
		}
		pods = append(pods, p)
	}
	return pods, nodes
}
