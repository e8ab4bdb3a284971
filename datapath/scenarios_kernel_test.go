package datapath

import (
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// TestPacketScenariosInTheKernel plays the packet scenarios with real packets: pods in
// network namespaces, the Proxier's table in the node's, as root. What the tracer says of
// each scenario (TestTracedPackets), the kernel must do.
func TestPacketScenariosInTheKernel(t *testing.T) {
	requireDatapath(t)
	playInTheKernel(t, programOurs)
}

// scenarioProgrammer programs node-a's datapath (configured as cfg) for a scenario's
// Services and slices, and undoes it when t ends: our Proxier (programOurs), or upstream
// kube-proxy in TestPacketScenariosWithKubeProxy. What it returns programs the Services and
// slices a scenario changes to, and returns once the datapath has them.
type scenarioProgrammer func(t testing.TB, cfg Config, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) (update func([]*corev1.Service, []*discoveryv1.EndpointSlice))

func programOurs(t testing.TB, cfg Config, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) func([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	proxier := newTestProxier(t, func(c *Config) { *c = cfg })
	mustSync(t, proxier, services, slices...)
	return func(services []*corev1.Service, slices []*discoveryv1.EndpointSlice) {
		mustSync(t, proxier, services, slices...)
	}
}

// playInTheKernel plays every packet scenario with real packets on the datapath program puts
// on the node.
func playInTheKernel(t *testing.T, program scenarioProgrammer) {
	for _, s := range packetScenarios() {
		t.Run(s.name, func(t *testing.T) {
			pods := map[string]*testPod{}
			for _, p := range s.pods {
				pods[p.name] = newPod(t, p.name, "")
				pods[p.name].serveTCPNamingPeer(t, 8080)
			}
			var client *testPod // nil: the node
			switch s.from {
			case fromClient:
				client = newPod(t, "client", "")
			case fromOutside:
				client = newOutsideClient(t)
			case fromNode:
			default:
				client = pods[s.from]
			}
			services, endpointSlices := s.services(func(name string) string {
				if s.family == corev1.IPv6Protocol {
					return pods[name].ip6
				}
				return pods[name].ip
			})
			program(t, s.config(), services, endpointSlices)

			switch {
			case s.want.unserved:
				expectUnserved(t, client, s.to)
			case s.want.refused:
				if _, err := client.dial(s.to, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("want connection refused, got %v", err)
				}
			case s.want.dropped:
				expectDropped(t, client, s.to)
			default:
				expectReached(t, client, s.to, s.want)
			}
		})
	}
}

// expectReached connects from client to addr until each pod of want.reach answered (at
// most 60 times; with ClientIP affinity 20 times, all to one of them) and checks that the
// pods saw the client's own address, or another one when want.masquerade.
func expectReached(t *testing.T, client *testPod, addr string, want scenarioWant) {
	t.Helper()
	n := 60
	if want.sticky {
		n = 20
	}
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		conn, err := client.dial(addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		local := conn.LocalAddr().(*net.TCPAddr).IP.String()
		reply, err := readReply(conn)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		name, peer, _ := strings.Cut(reply, " ")
		pod := strings.Split(name, ":")[0]
		counts[pod]++
		if masqueraded := peer != local; masqueraded != want.masquerade {
			t.Errorf("connection from %s reached %s from %s: masquerade %v, want %v", local, pod, peer, masqueraded, want.masquerade)
		}
	}
	var reached []string
	for pod := range counts {
		reached = append(reached, pod)
	}
	slices.Sort(reached)
	switch wantReach := slices.Sorted(slices.Values(want.reach)); {
	case want.sticky && (len(reached) != 1 || !slices.Contains(wantReach, reached[0])):
		t.Errorf("with ClientIP affinity, %d connections reached %v; want one pod of %v", n, counts, wantReach)
	case !want.sticky && !slices.Equal(reached, wantReach):
		t.Errorf("%d connections reached %v; want each of %v", n, counts, wantReach)
	}
}

// expectUnserved checks that a connection from client to addr fails as it would with no
// Service: refused by the node's closed port, or unreachable.
func expectUnserved(t *testing.T, client *testPod, addr string) {
	t.Helper()
	conn, err := client.dial(addr, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("a connection to %s was established; want it left alone (no Service serves it)", addr)
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, errno) {
			return
		}
	}
	t.Fatalf("a connection to %s: %v; want it refused by the node or unreachable, as with no Service", addr, err)
}

// expectDropped checks that a connection from client to addr gets no answer and that
// its packets never leave the node: without the drop, a packet to an address that no rule
// DNATs goes out the uplink (where it vanishes too).
func expectDropped(t *testing.T, client *testPod, addr string) {
	t.Helper()
	before := uplinkTxPackets(t)
	conn, err := client.dial(addr, 500*time.Millisecond)
	if err == nil {
		conn.Close()
		t.Fatalf("a connection to %s was established; want its packets dropped", addr)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a connection to %s was refused; want its packets dropped", addr)
	}
	if sent := uplinkTxPackets(t) - before; sent != 0 {
		t.Errorf("%d packets of a connection to %s left through the uplink; want them dropped on the node", sent, addr)
	}
}

func uplinkTxPackets(t *testing.T) uint64 {
	t.Helper()
	link, err := netlink.LinkByName(serviceUplinkDev)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Statistics.TxPackets
}
