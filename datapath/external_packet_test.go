package datapath

import (
	"fmt"
	"net"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// Packet tests of external traffic: a client outside the cluster CIDRs (its own namespace,
// joined to the node like a router would be) reaches NodePorts, external IPs and load
// balancer IPs; each backend answers with its name and the source address it saw.

const (
	nodePortTCP = 30080
	nodePortUDP = 30053
)

// serveSource answers each TCP connection and UDP datagram on port with "pod source-ip".
func (p *testPod) serveSource(tb testing.TB, port int) {
	tb.Helper()
	reply := func(client net.Addr) string {
		host, _, _ := net.SplitHostPort(client.String())
		return p.name + " " + host
	}
	p.serveTCPReplying(tb, port, func(client net.Addr) string { return reply(client) + "\n" })
	p.serveUDPReplying(tb, port, reply)
}

// outsideClient is a namespace outside the cluster CIDRs, routed through the node.
func outsideClient(tb testing.TB, name, ip string) *testPod { return newPod(tb, name, ip) }

// nodePortService is a NodePort Service with one TCP and one UDP port.
func nodePortService(name, clusterIP string, policy corev1.ServiceExternalTrafficPolicy) *corev1.Service {
	svc := makeService(name, clusterIP, tcp("http", 80, 8080), udp("dns", 53, 5353))
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort = nodePortTCP, nodePortUDP
	svc.Spec.ExternalTrafficPolicy = policy
	return svc
}

func askUDP(tb testing.TB, client *testPod, addr string) (string, error) {
	tb.Helper()
	return udpAsk(client.dialUDP(tb, addr))
}

func TestPacketsNodePortFromOutsideUnderBothTrafficPolicies(t *testing.T) {
	requireDatapath(t)
	backend := newPod(t, "np-backend", "")
	backend.serveSource(t, 8080)
	backend.serveSource(t, 5353)
	client := outsideClient(t, "np-client", "192.168.60.2")
	podClient := newPod(t, "np-pod-client", "")
	nodeAddr := "192.168.60.1" // the node's address on the client's link
	tcpAddr, udpAddr := fmt.Sprintf("%s:%d", nodeAddr, nodePortTCP), fmt.Sprintf("%s:%d", nodeAddr, nodePortUDP)

	cases := []struct {
		name         string
		policy       corev1.ServiceExternalTrafficPolicy
		backendNode  string
		reaches      bool
		sourceKeeped bool
	}{
		{"Cluster, endpoint on this node: masqueraded", corev1.ServiceExternalTrafficPolicyCluster, "node-a", true, false},
		{"Cluster, endpoint on another node: masqueraded", corev1.ServiceExternalTrafficPolicyCluster, "node-b", true, false},
		{"Local, endpoint on this node: client source kept", corev1.ServiceExternalTrafficPolicyLocal, "node-a", true, true},
		{"Local, endpoint only on another node: dropped", corev1.ServiceExternalTrafficPolicyLocal, "node-b", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxier := newTestProxier(t, nil)
			svc := nodePortService("np", "10.96.2.10", tc.policy)
			mustSync(t, proxier, []*corev1.Service{svc}, makeSlice(svc, "np-1", readyEP(backend.ip, tc.backendNode)))

			tcpReply, tcpErr := client.fetch(tcpAddr)
			udpReply, udpErr := askUDP(t, client, udpAddr)
			if !tc.reaches {
				if tcpErr == nil || udpErr == nil {
					t.Fatalf("want no answer; tcp %q (%v), udp %q (%v)", tcpReply, tcpErr, udpReply, udpErr)
				}
				// Traffic from the node itself and from its pods still goes to every endpoint.
				if reply, err := fetchFromNode(tcpAddr); err != nil || !strings.HasPrefix(reply, "np-backend ") {
					t.Errorf("from the node: %q, %v; want the backend", reply, err)
				}
				if reply, err := podClient.fetch(tcpAddr); err != nil || reply != "np-backend "+podClient.ip {
					t.Errorf("from a pod: %q, %v; want the backend, seeing the pod's address", reply, err)
				}
				return
			}
			for proto, got := range map[string]struct {
				reply string
				err   error
			}{"tcp": {tcpReply, tcpErr}, "udp": {udpReply, udpErr}} {
				if got.err != nil {
					t.Fatalf("%s: %v", proto, got.err)
				}
				source := strings.TrimPrefix(got.reply, "np-backend ")
				if source == got.reply {
					t.Fatalf("%s: reply %q is not from the backend", proto, got.reply)
				}
				if kept := source == client.ip; kept != tc.sourceKeeped {
					t.Errorf("%s: backend saw source %s; client is %s, want kept=%v", proto, source, client.ip, tc.sourceKeeped)
				}
			}
		})
	}
}

func TestPacketsExternalIPAndLoadBalancerSourceRanges(t *testing.T) {
	requireDatapath(t)
	backend := newPod(t, "lb-backend", "")
	backend.serveSource(t, 8080)
	allowed := outsideClient(t, "lb-allowed", "192.168.61.2")
	denied := outsideClient(t, "lb-denied", "192.168.62.2")
	proxier := newTestProxier(t, nil)

	svc := makeService("lb", "10.96.2.20", tcp("http", 80, 8080))
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalIPs = []string{"203.0.113.7"}
	svc.Spec.LoadBalancerSourceRanges = []string{"192.168.61.0/24"}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.9"},
		{IP: "198.51.100.10", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)}}
	mustSync(t, proxier, []*corev1.Service{svc}, makeSlice(svc, "lb-1", readyEP(backend.ip, "node-a")))

	for _, c := range []struct {
		client *testPod
		addr   string
		want   bool
	}{
		{allowed, "203.0.113.7:80", true}, {denied, "203.0.113.7:80", true}, // externalIPs have no source ranges
		{allowed, "198.51.100.9:80", true}, {denied, "198.51.100.9:80", false},
		{allowed, "198.51.100.10:80", false}, // ipMode Proxy: not ours
	} {
		reply, err := c.client.fetch(c.addr)
		if got := err == nil && strings.HasPrefix(reply, "lb-backend "); got != c.want {
			t.Errorf("%s to %s: reply %q, error %v; want reached=%v", c.client.name, c.addr, reply, err, c.want)
		}
	}
}
