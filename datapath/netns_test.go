package datapath

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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
	if os.Getenv(inPrivateNetnsEnv) == "" && os.Geteuid() == 0 {
		os.Exit(reexecInPrivateNetns())
	}
	if os.Getenv(inPrivateNetnsEnv) == "1" {
		if err := setUpNode(); err != nil {
			fmt.Fprintf(os.Stderr, "datapath tests: set up node namespace: %v\n", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func isFuzzWorker() bool {
	for _, arg := range os.Args[1:] {
		if strings.HasPrefix(arg, "-test.fuzzworker") {
			return true
		}
	}
	return false
}

// reexecInPrivateNetns runs this test binary again in a new network namespace and
// returns its exit code.
func reexecInPrivateNetns() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), inPrivateNetnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	default:
		// Could not create the namespace: run here, where the packet tests refuse to run.
		fmt.Fprintf(os.Stderr, "datapath tests: cannot re-exec in a private network namespace: %v\n", err)
		os.Setenv(inPrivateNetnsEnv, "unavailable")
		return -1
	}
}

// requireDatapath fails (or, with SKIP_DATAPATH=1, skips) a test that needs root, the
// nft binary and the private namespace, naming what is missing.
func requireDatapath(tb testing.TB) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		missing = append(missing, "the nft binary (apt-get install nftables)")
	}
	if os.Getenv(inPrivateNetnsEnv) != "1" {
		missing = append(missing, "a private network namespace (TestMain re-exec with CLONE_NEWNET)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "datapath packet test needs " + strings.Join(missing, ", ")
	if os.Getenv("SKIP_DATAPATH") == "1" {
		tb.Skip(msg)
	}
	tb.Fatal(msg + " (set SKIP_DATAPATH=1 to skip)")
}

// Addresses of the simulated node.
const (
	nodeIP           = "192.168.50.1"
	clusterCIDRv4    = "10.244.0.0/16"
	clusterCIDRv6    = "fd00:10:244::/48"
	serviceCIDRv4    = "10.96.0.0/12"
	serviceCIDRv6    = "fd00:10:96::/112"
	serviceUplinkDev = "uplink0"
)

// setUpNode prepares the private namespace as a node: forwarding on, loopback up, and
// the Service CIDRs routed to an uplink (as a default route would), so that
// packets to ClusterIPs reach the forward and output hooks.
func setUpNode() error {
	for path, value := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":              "1",
		"/proc/sys/net/ipv6/conf/all/forwarding":     "1",
		"/proc/sys/net/ipv6/conf/default/accept_dad": "0",
	} {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", path, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	uplink, err := addUplink()
	if err != nil {
		return err
	}
	for _, cidr := range []string{serviceCIDRv4, serviceCIDRv6} {
		_, dst, _ := net.ParseCIDR(cidr)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: uplink.Attrs().Index, Dst: dst}); err != nil {
			links, _ := netlink.LinkList()
			var names []string
			for _, l := range links {
				names = append(names, fmt.Sprintf("%s/%d", l.Attrs().Name, l.Attrs().Index))
			}
			return fmt.Errorf("route %s via index %d (links %v): %w", cidr, uplink.Attrs().Index, names, err)
		}
	}
	return nil
}

var uplinkSink netns.NsHandle

// addUplink adds the node's "uplink": a veth whose peer sits in a namespace that
// forwards nothing, so packets that no rule DNATs vanish there like on a real network
// (the kernel in use may lack the dummy driver).
func addUplink() (netlink.Link, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	node, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer node.Close()
	// The sink stays open for the life of the process: closing the last handle would
	// destroy the namespace and, with it, the veth pair.
	sink, err := netns.New()
	if err != nil {
		return nil, err
	}
	uplinkSink = sink
	if err := netns.Set(node); err != nil {
		return nil, err
	}
	uplink := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: serviceUplinkDev}, PeerName: serviceUplinkDev + "p"}
	if err := netlink.LinkAdd(uplink); err != nil {
		return nil, fmt.Errorf("add %s: %w", serviceUplinkDev, err)
	}
	peer, err := netlink.LinkByName(serviceUplinkDev + "p")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetNsFd(peer, int(sink)); err != nil {
		return nil, err
	}
	// The peer is up (so routes through the uplink are usable) but has no address and
	// forwards nothing.
	if err := inNetns(sink, func() error { return netlink.LinkSetUp(peer) }); err != nil {
		return nil, err
	}
	link, err := netlink.LinkByName(serviceUplinkDev)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, err
	}
	return link, netlink.AddrAdd(link, mustAddr(nodeIP+"/32"))
}

func mustAddr(cidr string) *netlink.Addr {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		panic(err)
	}
	a.Flags = unix.IFA_F_NODAD
	return a
}

// inNetns runs f on a thread switched into ns. If the thread cannot be switched back,
// it stays locked so the runtime discards it instead of reusing it elsewhere.
func inNetns(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("return to node namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// testPod is a network namespace joined to the node by a veth pair, with a /24 (and
// a /64) of its own: pod index i has 10.244.i.2 and fd00:10:244:i::2, the node side .1.
type testPod struct {
	name    string
	ns      netns.NsHandle
	ip, ip6 string
	hostDev string

	mu      sync.Mutex
	closers []io.Closer
}

var podCounter struct {
	sync.Mutex
	n int
}

// newPod creates a pod namespace with the given IPv4 address, or the next free one
// from the cluster CIDR when ip is "".
func newPod(tb testing.TB, name, ip string) *testPod {
	tb.Helper()
	podCounter.Lock()
	podCounter.n++
	i := podCounter.n
	podCounter.Unlock()
	p := &testPod{name: name, ip: ip, ip6: fmt.Sprintf("fd00:10:244:%x::2", i), hostDev: fmt.Sprintf("vp%d", i)}
	gw := fmt.Sprintf("10.244.%d.1", i)
	if p.ip == "" {
		p.ip = fmt.Sprintf("10.244.%d.2", i)
	} else {
		gw = strings.Join(append(strings.Split(ip, ".")[:3], "1"), ".")
	}
	gw6 := fmt.Sprintf("fd00:10:244:%x::1", i)
	if err := p.create(gw, gw6); err != nil {
		tb.Fatalf("create pod %s: %v", name, err)
	}
	tb.Cleanup(p.destroy)
	return p
}

func (p *testPod) create(gw, gw6 string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	node, err := netns.Get()
	if err != nil {
		return err
	}
	defer node.Close()
	if p.ns, err = netns.New(); err != nil {
		return err
	}
	if err := netns.Set(node); err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.hostDev}, PeerName: p.hostDev + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	peer, err := netlink.LinkByName(p.hostDev + "p")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsFd(peer, int(p.ns)); err != nil {
		return err
	}
	for _, a := range []string{gw + "/24", gw6 + "/64"} {
		if err := netlink.AddrAdd(veth, mustAddr(a)); err != nil { // AddrAdd resolves the index by name
			return fmt.Errorf("node side address %s: %w", a, err)
		}
	}
	host, err := netlink.LinkByName(p.hostDev)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	return p.configureInside(gw, gw6)
}

// configureInside names the pod's interface eth0, addresses it and routes everything
// through the node.
func (p *testPod) configureInside(gw, gw6 string) error {
	h, err := netlink.NewHandleAt(p.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	eth, err := h.LinkByName(p.hostDev + "p")
	if err != nil {
		return err
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		return err
	}
	for _, a := range []string{p.ip + "/24", p.ip6 + "/64"} {
		if err := h.AddrAdd(eth, mustAddr(a)); err != nil {
			return fmt.Errorf("pod address %s: %w", a, err)
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, l := range []netlink.Link{lo, eth} {
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	for _, gwIP := range []string{gw, gw6} {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP(gwIP)}); err != nil {
			return fmt.Errorf("default route via %s: %w", gwIP, err)
		}
	}
	// Clients open tens of thousands of connections; give them every port.
	return inNetns(p.ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0o644)
	})
}

func (p *testPod) destroy() {
	p.mu.Lock()
	for _, c := range p.closers {
		c.Close()
	}
	p.mu.Unlock()
	if l, err := netlink.LinkByName(p.hostDev); err == nil {
		_ = netlink.LinkDel(l)
	}
	p.ns.Close()
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
	var l net.Listener
	err := inNetns(p.ns, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		tb.Fatalf("pod %s listen tcp/%d: %v", p.name, port, err)
	}
	p.track(l)
	reply := fmt.Sprintf("%s:%d\n", p.name, port)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, reply); err == nil {
					_, _ = io.Copy(io.Discard, c)
				}
			}()
		}
	}()
}

// serveUDP answers every datagram on port with "pod:port".
func (p *testPod) serveUDP(tb testing.TB, port int) {
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
	reply := []byte(fmt.Sprintf("%s:%d", p.name, port))
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(reply, from)
		}
	}()
}

// fetch connects from the pod to addr and returns the server's one-line answer.
func (p *testPod) fetch(addr string) (string, error) {
	var conn net.Conn
	err := inNetns(p.ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	return readReply(conn)
}

// fetchFromNode connects from the node namespace itself (output hook).
func fetchFromNode(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	return readReply(conn)
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
