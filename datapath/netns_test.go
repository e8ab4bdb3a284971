package datapath

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/kube-clusterip/kube-clusterip/test/netnstest"
)

// The packet tests and benchmarks run inside a network namespace of their own: TestMain
// re-executes the test binary in a new one (clone with CLONE_NEWNET), which plays the
// node; "pods" are further namespaces joined to it by veth pairs. Nothing is linked to
// the host's namespace, and nft only ever sees the private namespace's tables.
const inPrivateNetnsEnv = "KUBE_CLUSTERIP_DATAPATH_IN_PRIVATE_NETNS"

func TestMain(m *testing.M) {
	if isFuzzWorker() {
		// Started by the fuzzing coordinator, already in its namespace: just fuzz.
		os.Exit(m.Run())
	}
	os.Exit(netnstest.Main(inPrivateNetnsEnv, "datapath tests", setUpNode, m.Run))
}

// Shared with netnstest under the names the other test files use.
var (
	isFuzzWorker = netnstest.IsFuzzWorker
	inNetns      = netnstest.Run
	mustAddr     = netnstest.MustAddr
)

// requireDatapath fails (or, with SKIP_DATAPATH=1, skips) a test that needs root, the
// nft binary and the private namespace, naming what is missing.
func requireDatapath(tb testing.TB) {
	tb.Helper()
	missing := netnstest.Missing(inPrivateNetnsEnv)
	if missing == "" {
		return
	}
	msg := "datapath packet test needs " + missing
	if os.Getenv("SKIP_DATAPATH") == "1" {
		tb.Skip(msg)
	}
	tb.Fatal(msg + " (set SKIP_DATAPATH=1 to skip)")
}

// Addresses of the simulated node.
const (
	nodeIP           = "192.168.50.1"
	nodeIPv6         = "fd00:50::1"
	clusterCIDRv4    = "10.244.0.0/16"
	clusterCIDRv6    = "fd00:10:244::/48"
	serviceCIDRv4    = "10.96.0.0/12"
	serviceCIDRv6    = "fd00:10:96::/112"
	serviceUplinkDev = "uplink0"
	// externalIPFromNode and loadBalancerIPFromNode are routed out of the node (see setUpNode).
	externalIPFromNode     = "203.0.113.80"
	loadBalancerIPFromNode = "198.51.100.81"
)

// uplinkSink is where the node's "uplink" leads: a namespace that has no address and forwards
// nothing, so packets that no rule DNATs vanish there like on a real network (the kernel in
// use may lack the dummy driver). It stays open for the life of the process: closing the
// last handle would destroy the namespace and, with it, the veth pair.
var uplinkSink *netnstest.VethNetns

// setUpNode prepares the private namespace as a node: forwarding on, loopback up, and
// the Service CIDRs routed to an uplink (as a default route would), so that
// packets to ClusterIPs reach the forward and output hooks.
func setUpNode() error {
	err := netnstest.SetUpNode(map[string]string{
		"ipv4/ip_forward":              "1",
		"ipv6/conf/all/forwarding":     "1",
		"ipv6/conf/default/accept_dad": "0",
	})
	if err != nil {
		return err
	}
	// The node's addresses: the source of its own connections to ClusterIPs, as on a node
	// whose default route leads out through its node IP.
	uplinkSink = &netnstest.VethNetns{HostDev: serviceUplinkDev, HostAddrs: []string{nodeIP + "/32", nodeIPv6 + "/128"}}
	if err := uplinkSink.Create(); err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	link, err := netlink.LinkByName(serviceUplinkDev)
	if err != nil {
		return err
	}
	// Beyond the node, as a default route would lead there too: the Service CIDRs, and the
	// external IP and a load balancer IP that scenarios reach from the node. (Other addresses
	// stay unroutable, so that a connection nothing serves fails at once.)
	for _, cidr := range []string{serviceCIDRv4, serviceCIDRv6, externalIPFromNode + "/32", loadBalancerIPFromNode + "/32"} {
		_, dst, _ := net.ParseCIDR(cidr)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst}); err != nil {
			links, _ := netlink.LinkList()
			var names []string
			for _, l := range links {
				names = append(names, fmt.Sprintf("%s/%d", l.Attrs().Name, l.Attrs().Index))
			}
			return fmt.Errorf("route %s via index %d (links %v): %w", cidr, link.Attrs().Index, names, err)
		}
	}
	return nil
}

// testPod is a network namespace joined to the node by a veth pair, with a /28 (and
// a /64) of its own: pod index i has the second address of each (fd00:10:244:i::2), the
// node side the first.
type testPod struct {
	name    string
	ns      netns.NsHandle
	ip, ip6 string

	mu      sync.Mutex
	closers []io.Closer
}

var podCounter struct {
	sync.Mutex
	n int
}

// newPod creates a pod namespace with the given IPv4 address, or the next free one
// from the cluster CIDR when ip is "". Its IPv6 address is the next free one of the cluster
// CIDR.
func newPod(tb testing.TB, name, ip string) *testPod {
	tb.Helper()
	return newPodAt(tb, name, ip, "")
}

// newOutsideClient creates a namespace whose addresses in both families lie outside the
// cluster CIDRs, routed through the node as a client beyond the cluster is.
func newOutsideClient(tb testing.TB) *testPod {
	tb.Helper()
	return newPodAt(tb, fromOutside, outsideIP, outsideIPv6)
}

// newPodAt is newPod with an IPv6 address of its own too ("": the next free one of the
// cluster CIDR). A given address's gateway, the node's side, is the first of its /24 (/64).
func newPodAt(tb testing.TB, name, ip, ip6 string) *testPod {
	tb.Helper()
	podCounter.Lock()
	podCounter.n++
	i := podCounter.n
	podCounter.Unlock()
	p := &testPod{name: name, ip: ip, ip6: ip6}
	// Pod i has the /28 at 10.244.0.0 + 16i: room for 4095 pods in one process.
	if i >= 1<<12 {
		tb.Fatalf("pod %s: the cluster CIDR has no /28 left for pod %d", name, i)
	}
	base := netip.AddrFrom4([4]byte{10, 244, byte(i >> 4), byte(i << 4)})
	gw, bits := base.Next().String(), 28
	if p.ip == "" {
		p.ip = base.Next().Next().String()
	} else {
		gw, bits = strings.Join(append(strings.Split(ip, ".")[:3], "1"), "."), 24
	}
	gw6 := fmt.Sprintf("fd00:10:244:%x::1", i)
	if p.ip6 == "" {
		p.ip6 = fmt.Sprintf("fd00:10:244:%x::2", i)
	} else {
		prefix, err := netip.ParsePrefix(ip6 + "/64")
		if err != nil {
			tb.Fatalf("pod %s: %v", name, err)
		}
		gw6 = prefix.Masked().Addr().Next().String()
	}
	veth := &netnstest.VethNetns{
		HostDev:   fmt.Sprintf("vp%d", i),
		HostAddrs: []string{fmt.Sprintf("%s/%d", gw, bits), gw6 + "/64"},
		Addrs:     []string{fmt.Sprintf("%s/%d", p.ip, bits), p.ip6 + "/64"},
	}
	if err := veth.Create(); err != nil {
		tb.Fatalf("create pod %s: %v", name, err)
	}
	p.ns = veth.NS
	tb.Cleanup(func() { p.destroy(veth) })
	// Clients open tens of thousands of connections; give them every port.
	err := inNetns(p.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644)
	})
	if err != nil {
		tb.Fatalf("pod %s port range: %v", name, err)
	}
	return p
}

func (p *testPod) destroy(veth *netnstest.VethNetns) {
	p.mu.Lock()
	for _, c := range p.closers {
		c.Close()
	}
	p.mu.Unlock()
	veth.Delete()
}

func (p *testPod) track(c io.Closer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closers = append(p.closers, c)
}

// serveTCP answers every connection on port (IPv4 and IPv6) with "pod:port" and closes
// it once the client has. Letting the client close first keeps TIME_WAIT on the
// client, whose kernel then avoids reusing those ports, instead of on the server, where
// a reused port meets a TIME_WAIT socket and can stall a connect by a second.
func (p *testPod) serveTCP(tb testing.TB, port int) {
	tb.Helper()
	p.serveTCPReplying(tb, port, func(net.Addr) string { return fmt.Sprintf("%s:%d\n", p.name, port) })
}

// serveTCPNamingPeer is serveTCP answering "pod:port peer-ip": the address the pod sees
// the connection come from tells whether it was masqueraded.
func (p *testPod) serveTCPNamingPeer(tb testing.TB, port int) {
	tb.Helper()
	p.serveTCPReplying(tb, port, func(peer net.Addr) string {
		return fmt.Sprintf("%s:%d %s\n", p.name, port, peer.(*net.TCPAddr).IP)
	})
}

func (p *testPod) serveTCPReplying(tb testing.TB, port int, reply func(peer net.Addr) string) {
	tb.Helper()
	p.serveTCPConns(tb, port, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, reply(c.RemoteAddr())); err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	})
}

// serveTCPLines answers each line of every connection on port with the pod's name, for as
// long as the client keeps the connection.
func (p *testPod) serveTCPLines(tb testing.TB, port int) {
	tb.Helper()
	p.serveTCPConns(tb, port, func(c net.Conn) {
		p.track(c)
		for lines := bufio.NewScanner(c); lines.Scan(); {
			if _, err := io.WriteString(c, p.name+"\n"); err != nil {
				return
			}
		}
	})
}

// serveTCPConns listens on port and hands every connection to serve, which runs on a
// goroutine of its own; the connection is closed when serve returns.
func (p *testPod) serveTCPConns(tb testing.TB, port int, serve func(net.Conn)) {
	tb.Helper()
	var l net.Listener
	err := inNetns(p.ns, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		tb.Fatalf("pod %s listen tcp/%d: %v", p.name, port, err)
	}
	p.track(l)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

// serveUDP answers every datagram on port with "pod:port".
func (p *testPod) serveUDP(tb testing.TB, port int) {
	tb.Helper()
	reply := fmt.Sprintf("%s:%d", p.name, port)
	p.serveUDPReplying(tb, port, func(net.Addr) string { return reply })
}

// serveUDPReplying is serveUDP answering what reply makes of the peer's address.
func (p *testPod) serveUDPReplying(tb testing.TB, port int, reply func(client net.Addr) string) {
	tb.Helper()
	var c net.PacketConn
	err := inNetns(p.ns, func() (err error) {
		c, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		tb.Fatalf("pod %s listen udp/%d: %v", p.name, port, err)
	}
	p.track(c)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte(reply(from)), from)
		}
	}()
}

// fetch connects from the pod to addr and returns the server's one-line answer.
func (p *testPod) fetch(addr string) (string, error) {
	conn, err := p.dial(addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	return readReply(conn)
}

// dial opens a TCP connection from the pod (nil: from the node) to addr.
func (p *testPod) dial(addr string, timeout time.Duration) (conn net.Conn, err error) {
	if p == nil {
		return net.DialTimeout("tcp", addr, timeout)
	}
	err = inNetns(p.ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return conn, err
}

// fetchFromNode connects from the node namespace itself (output hook).
func fetchFromNode(addr string) (string, error) {
	var node *testPod
	return node.fetch(addr)
}

func readReply(conn net.Conn) (string, error) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", conn.RemoteAddr(), err)
	}
	return strings.TrimSpace(line), nil
}

// dialUDP opens a connected UDP socket from the pod, so every datagram is one flow.
func (p *testPod) dialUDP(tb testing.TB, addr string) *net.UDPConn {
	tb.Helper()
	var conn net.Conn
	err := inNetns(p.ns, func() (err error) {
		conn, err = net.Dial("udp", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("pod %s dial udp %s: %v", p.name, addr, err)
	}
	p.track(conn)
	return conn.(*net.UDPConn)
}

// udpAsk sends one datagram and waits up to a second for the answer.
func udpAsk(conn *net.UDPConn) (string, error) {
	if _, err := conn.Write([]byte("?")); err != nil {
		return "", err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// newTestProxier returns a dual-stack Proxier for the simulated node whose tables are
// deleted when the test ends.
func newTestProxier(tb testing.TB, mutate func(*Config)) *Proxier {
	tb.Helper()
	cfg := Config{
		NodeName:          "node-a",
		ClusterCIDRs:      []string{clusterCIDRv4, clusterCIDRv6},
		ServiceCIDRs:      []string{serviceCIDRv4, serviceCIDRv6},
		CanaryCheckPeriod: 100 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatalf("new proxier: %v", err)
	}
	tb.Cleanup(func() {
		if err := p.Cleanup(context.Background()); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return p
}
