package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// flowScenario is a flow that outlives a change of its Service: opened on before's objects,
// used again once the node has after's, when new flows are opened too. Played by the kernel
// with our rules (TestFlowScenariosInTheKernel) and with kube-proxy's
// (TestFlowScenariosWithKubeProxy). Every pod is on node-a's links and answers on 8080 with
// its name: each UDP datagram, and each line of a TCP connection.
type flowScenario struct {
	name          string
	proto         corev1.Protocol
	from          string   // fromClient or fromOutside
	pods          []string // the endpoints' pods, by name
	before, after func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice)
	to            string // address:port
	// first is what the flow gets before the change: a pod's name, or flowUnanswered.
	first string
	// then is what the same flow gets after it: a pod's name, flowRefused or flowUnanswered.
	then string
	// upstream, when set, is what the same flow gets with kube-proxy v1.37.2 instead of then:
	// a deliberate difference (README, "Deliberate differences").
	upstream string
	// fresh are what new flows get after the change, each of them possible.
	fresh []string
}

// What a flow can get besides a pod's answer.
const (
	flowRefused    = "(refused)"
	flowUnanswered = "(no answer)"
)

func flowScenarios() []flowScenario {
	const clusterIP = "10.96.3.10"
	udpTo := func(eps ...func(ip podIPs) ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svc := makeService("flows", clusterIP, udp("dns", 53, 8080))
			var list []ep
			for _, e := range eps {
				list = append(list, e(ip))
			}
			return []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{makeSlice(svc, "flows-1", list...)}
		}
	}
	ready := func(pod, node string) func(ip podIPs) ep {
		return func(ip podIPs) ep { return readyEP(ip(pod), node) }
	}
	terminating := func(pod string, serving bool) func(ip podIPs) ep {
		return func(ip podIPs) ep { return ep{ip: ip(pod), node: "node-a", serving: serving, terminating: true} }
	}
	nothing := func(podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) { return nil, nil }
	// nodePortTo is udpTo as a NodePort Service on 30053.
	nodePortTo := func(eps ...func(ip podIPs) ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			svcs, slices := udpTo(eps...)(ip)
			svcs[0].Spec.Type, svcs[0].Spec.Ports[0].NodePort = corev1.ServiceTypeNodePort, 30053
			return svcs, slices
		}
	}
	// stickyTo is a TCP Service on 80 with ClientIP affinity.
	stickyTo := func(eps ...func(ip podIPs) ep) func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
		return func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
			var list []ep
			for _, e := range eps {
				list = append(list, e(ip))
			}
			svcs, slices := serviceTo("flows", clusterIP, list...)
			sticky(svcs[0], 60)
			return svcs, slices
		}
	}
	ab := []string{"pod-a", "pod-b"}
	udpAddr := clusterIP + ":53"
	return []flowScenario{
		{name: "UDP: a flow whose endpoint leaves the Service moves to one that serves", proto: corev1.ProtocolUDP, pods: ab,
			before: udpTo(ready("pod-a", "node-a")), after: udpTo(ready("pod-b", "node-a")),
			to: udpAddr, first: "pod-a", then: "pod-b", fresh: []string{"pod-b"}},
		{name: "UDP: a flow stays with its endpoint while it terminates and still serves", proto: corev1.ProtocolUDP, pods: ab,
			before: udpTo(ready("pod-a", "node-a")), after: udpTo(terminating("pod-a", true), ready("pod-b", "node-a")),
			to: udpAddr, first: "pod-a", then: "pod-a", fresh: []string{"pod-b"}},
		{name: "UDP: a flow leaves its endpoint once it stops serving", proto: corev1.ProtocolUDP, pods: ab,
			before: udpTo(ready("pod-a", "node-a")), after: udpTo(terminating("pod-a", false), ready("pod-b", "node-a")),
			to: udpAddr, first: "pod-a", then: "pod-b", fresh: []string{"pod-b"}},
		{name: "UDP: a flow whose Service loses its last endpoint is refused", proto: corev1.ProtocolUDP, pods: ab[:1],
			before: udpTo(ready("pod-a", "node-a")), after: udpTo(),
			to: udpAddr, first: "pod-a", then: flowRefused, fresh: []string{flowRefused}},
		{name: "UDP: a flow whose Service is deleted stops", proto: corev1.ProtocolUDP, pods: ab[:1],
			before: udpTo(ready("pod-a", "node-a")), after: nothing,
			to: udpAddr, first: "pod-a", then: flowUnanswered, upstream: "pod-a", fresh: []string{flowUnanswered}},
		{name: "UDP: a flow that began before its Service existed reaches it once it does", proto: corev1.ProtocolUDP, pods: ab[:1],
			before: nothing, after: udpTo(ready("pod-a", "node-a")),
			to: udpAddr, first: flowUnanswered, then: "pod-a", fresh: []string{"pod-a"}},
		{name: "UDP: a traffic policy change leaves a flow on an endpoint that still serves", proto: corev1.ProtocolUDP, pods: ab,
			before: udpTo(ready("pod-a", "node-b")),
			after: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := udpTo(ready("pod-a", "node-b"), ready("pod-b", "node-a"))(ip)
				svcs[0].Spec.InternalTrafficPolicy = knftables.PtrTo(corev1.ServiceInternalTrafficPolicyLocal)
				return svcs, slices
			},
			to: udpAddr, first: "pod-a", then: "pod-a", fresh: []string{"pod-b"}},
		{name: "UDP: a NodePort flow from outside whose endpoint leaves moves to one that serves", proto: corev1.ProtocolUDP,
			from: fromOutside, pods: ab,
			before: nodePortTo(ready("pod-a", "node-a")), after: nodePortTo(ready("pod-b", "node-a")),
			to: nodeIP + ":30053", first: "pod-a", then: "pod-b", fresh: []string{"pod-b"}},
		{name: "UDP: a NodePort flow keeps its endpoint when the Service loses its last one", proto: corev1.ProtocolUDP,
			from: fromOutside, pods: ab[:1],
			before: nodePortTo(ready("pod-a", "node-a")), after: nodePortTo(),
			to: nodeIP + ":30053", first: "pod-a", then: "pod-a", fresh: []string{flowRefused}},
		{name: "UDP: a flow to a port the Service no longer has stops", proto: corev1.ProtocolUDP, pods: ab[:1],
			before: udpTo(ready("pod-a", "node-a")),
			after: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				svcs, slices := udpTo(ready("pod-a", "node-a"))(ip)
				svcs[0].Spec.Ports[0].Port = 54
				return svcs, slices
			},
			to: udpAddr, first: "pod-a", then: flowRefused, upstream: "pod-a", fresh: []string{flowRefused}},
		{name: "TCP, ClientIP affinity: new connections stay with their endpoint when another joins", proto: corev1.ProtocolTCP, pods: ab,
			before: stickyTo(ready("pod-a", "node-a")), after: stickyTo(ready("pod-a", "node-a"), ready("pod-b", "node-a")),
			to: clusterIP + ":80", first: "pod-a", then: "pod-a", fresh: []string{"pod-a"}},
		{name: "TCP, ClientIP affinity: new connections leave an endpoint that leaves", proto: corev1.ProtocolTCP, pods: ab,
			before: stickyTo(ready("pod-a", "node-a")), after: stickyTo(ready("pod-b", "node-a")),
			to: clusterIP + ":80", first: "pod-a", then: "pod-a", fresh: []string{"pod-b"}},
		{name: "TCP, ClientIP affinity: new connections leave an endpoint that terminates", proto: corev1.ProtocolTCP, pods: ab,
			before: stickyTo(ready("pod-a", "node-a")), after: stickyTo(terminating("pod-a", true), ready("pod-b", "node-a")),
			to: clusterIP + ":80", first: "pod-a", then: "pod-a", fresh: []string{"pod-b"}},
		{name: "TCP: an open connection stays with its endpoint after it leaves the Service", proto: corev1.ProtocolTCP, pods: ab,
			before: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("flows", clusterIP, readyEP(ip("pod-a"), "node-a"))
			},
			after: func(ip podIPs) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
				return serviceTo("flows", clusterIP, readyEP(ip("pod-b"), "node-a"))
			},
			to: clusterIP + ":80", first: "pod-a", then: "pod-a", fresh: []string{"pod-b"}},
	}
}

// flowConfig is node-a's Config for the flow scenarios.
func flowConfig() Config {
	return packetScenario{}.config()
}

func TestFlowScenariosInTheKernel(t *testing.T) {
	requireDatapath(t)
	playFlowsInTheKernel(t, programOurs, false)
}

// playFlowsInTheKernel plays every flow scenario with real packets on the datapath program
// puts on the node (upstream's: kube-proxy's).
func playFlowsInTheKernel(t *testing.T, program scenarioProgrammer, upstream bool) {
	for _, s := range flowScenarios() {
		t.Run(s.name, func(t *testing.T) {
			pods := map[string]*testPod{}
			for _, name := range s.pods {
				p := newPod(t, name, "")
				if s.proto == corev1.ProtocolUDP {
					p.serveUDPReplying(t, 8080, func(net.Addr) string { return p.name })
				} else {
					p.serveTCPLines(t, 8080)
				}
				pods[name] = p
			}
			var client *testPod
			if s.from == fromOutside {
				client = newOutsideClient(t)
			} else {
				client = newPod(t, "client", "")
			}
			ip := func(name string) string { return pods[name].ip }
			services, endpointSlices := s.before(ip)
			update := program(t, flowConfig(), services, endpointSlices)

			flow := openFlow(t, client, s.proto, s.to)
			if got := flow.ask(); got != s.first {
				t.Fatalf("before the change the flow got %s, want %s", got, s.first)
			}
			update(s.after(ip))
			then := s.then
			if upstream && s.upstream != "" {
				then = s.upstream
			}
			if got := flow.ask(); got != then {
				t.Errorf("after the change the same flow got %s, want %s", got, then)
			}
			// To see each of several endpoints takes many flows; one outcome, a few (a refusal
			// is an ICMP error, which the kernel sends at most 6 at a time to a host).
			flows := 30
			if len(s.fresh) == 1 {
				flows = 4
			}
			got := map[string]int{}
			for range flows {
				got[openFlow(t, client, s.proto, s.to).ask()]++
			}
			if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(s.fresh))) {
				t.Errorf("after the change %d new flows got %v, want each of %v", flows, got, s.fresh)
			}
		})
	}
}

// testFlow is one UDP flow (a connected socket) or TCP connection from a pod.
type testFlow struct {
	conn   net.Conn
	lines  *bufio.Reader // TCP
	failed error         // the TCP connection did not open
}

func openFlow(t *testing.T, from *testPod, proto corev1.Protocol, addr string) *testFlow {
	t.Helper()
	if proto == corev1.ProtocolUDP {
		return &testFlow{conn: from.dialUDP(t, addr)}
	}
	conn, err := from.dial(addr, 2*time.Second)
	if err != nil {
		return &testFlow{failed: err}
	}
	from.track(conn)
	return &testFlow{conn: conn, lines: bufio.NewReader(conn)}
}

// ask sends one datagram or line and returns the pod that answered, flowRefused or
// flowUnanswered.
func (f *testFlow) ask() string {
	err := f.failed
	if err == nil {
		_, err = io.WriteString(f.conn, "?\n")
	}
	var answer string
	if err == nil {
		_ = f.conn.SetReadDeadline(time.Now().Add(time.Second))
		if f.lines != nil {
			answer, err = f.lines.ReadString('\n')
		} else {
			buf := make([]byte, 1500)
			var n int
			n, err = f.conn.Read(buf)
			answer = string(buf[:n])
		}
	}
	switch {
	case err == nil:
		return strings.TrimSpace(answer)
	case errors.Is(err, syscall.ECONNREFUSED):
		return flowRefused
	case errors.Is(err, os.ErrDeadlineExceeded):
		return flowUnanswered
	default:
		return fmt.Sprintf("(%v)", err)
	}
}
