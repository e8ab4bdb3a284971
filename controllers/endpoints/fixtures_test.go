package endpoints

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// Fixtures for the table tests: a Service and Pods in namespace "ns", built by options.

type svcOption = func(*corev1.Service)

func service(opts ...svcOption) *corev1.Service {
	return kit.MakeService("web", "ns").Selector(map[string]string{"app": "web"}).
		Families(corev1.IPv4Protocol).TCPPort("http", 80, 8080).
		Mutate(func(s *corev1.Service) { s.UID, s.Spec.ClusterIP = "svc-uid", "10.96.0.10" }).
		Mutate(opts...).Obj()
}

func withPorts(ports ...corev1.ServicePort) svcOption {
	return func(s *corev1.Service) { s.Spec.Ports = ports }
}

func withPublishNotReady(s *corev1.Service) { s.Spec.PublishNotReadyAddresses = true }

func headless(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }

func withFamilies(families ...corev1.IPFamily) svcOption {
	return func(s *corev1.Service) {
		s.Spec.IPFamilies = families
		if families[0] == corev1.IPv6Protocol {
			s.Spec.ClusterIP = "fd00::10"
		}
	}
}

func withoutSelector(s *corev1.Service) { s.Spec.Selector = nil }

func withServiceLabels(labels map[string]string) svcOption {
	return func(s *corev1.Service) { s.Labels = labels }
}

func svcPort(name string, port int32, target intstr.IntOrString, protocol corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: protocol}
}

type podOption func(*corev1.Pod)

// pod is a running, ready pod selected by service(), on node-a, with the given IPs.
func pod(name string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid"), Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func podWith(p *corev1.Pod, opts ...podOption) *corev1.Pod {
	for _, o := range opts {
		o(p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }

func terminating(p *corev1.Pod) {
	now := metav1.Now()
	p.DeletionTimestamp = &now
}

func phase(ph corev1.PodPhase) podOption { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func inNamespace(ns string) podOption { return func(p *corev1.Pod) { p.Namespace = ns } }

func labelled(labels map[string]string) podOption { return func(p *corev1.Pod) { p.Labels = labels } }

func onNode(node string) podOption { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

func containerPorts(ports ...corev1.ContainerPort) podOption {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports = ports }
}

func hostnameSubdomain(hostname, subdomain string) podOption {
	return func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = hostname, subdomain }
}

func pods(ps ...*corev1.Pod) []*corev1.Pod { return ps }

func nodes(zones map[string]string) map[string]*corev1.Node {
	out := map[string]*corev1.Node{}
	for name, zone := range zones {
		n := kit.MakeNode(name)
		if zone != "" {
			n.Zone(zone)
		}
		out[name] = n.Obj()
	}
	return out
}

var defaultNodes = nodes(map[string]string{"node-a": "zone-a", "node-b": "zone-b"})

// renderSubsets prints subsets compactly: "ready=IP,IP notReady=IP ports=name:port/proto".
func renderSubsets(subsets []corev1.EndpointSubset) []string {
	out := []string{}
	for _, s := range subsets {
		var ready, notReady, ports []string
		for _, a := range s.Addresses {
			ready = append(ready, a.IP)
		}
		for _, a := range s.NotReadyAddresses {
			notReady = append(notReady, a.IP)
		}
		for _, p := range s.Ports {
			ports = append(ports, renderPort(p.Name, p.Port, p.Protocol, p.AppProtocol))
		}
		sort.Strings(ports)
		out = append(out, fmt.Sprintf("ready=%s notReady=%s ports=%s",
			strings.Join(ready, ","), strings.Join(notReady, ","), strings.Join(ports, ",")))
	}
	return out
}

func renderPort(name string, port int32, protocol corev1.Protocol, appProtocol *string) string {
	s := fmt.Sprintf("%s:%d/%s", name, port, protocol)
	if appProtocol != nil {
		s += "(" + *appProtocol + ")"
	}
	return s
}

// renderGroups prints groups: "IPv4 ports=... IP[RST]" where R, S, T are set conditions
// (ready, serving, terminating), '-' when false.
func renderGroups(groups []EndpointGroup) []string {
	out := []string{}
	for _, g := range groups {
		out = append(out, renderSliceContent(g.AddressType, g.Ports, g.Endpoints))
	}
	sort.Strings(out)
	return out
}

func renderSliceContent(t discoveryv1.AddressType, ports []discoveryv1.EndpointPort, endpoints []discoveryv1.Endpoint) string {
	var ps, es []string
	for _, p := range ports {
		ps = append(ps, renderPort(ptr.Deref(p.Name, ""), ptr.Deref(p.Port, 0), ptr.Deref(p.Protocol, ""), p.AppProtocol))
	}
	for _, e := range endpoints {
		es = append(es, fmt.Sprintf("%s[%s%s%s]", strings.Join(e.Addresses, ","),
			flag(e.Conditions.Ready, "R"), flag(e.Conditions.Serving, "S"), flag(e.Conditions.Terminating, "T")))
	}
	sort.Strings(ps)
	sort.Strings(es)
	return fmt.Sprintf("%s ports=%s eps=%s", t, strings.Join(ps, ","), strings.Join(es, ","))
}

func flag(b *bool, letter string) string {
	switch {
	case b == nil:
		return "?"
	case *b:
		return letter
	}
	return "-"
}
