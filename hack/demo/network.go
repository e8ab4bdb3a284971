package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kube-clusterip/kube-clusterip/test/netnstest"

	"github.com/kube-clusterip/kube-clusterip/test/podhttp"
)

// Addresses of the demo's network: the node is the demo's own network namespace.
const (
	nodeName       = "demo-node"
	clusterCIDR    = "10.244.0.0/16" // every pod CIDR of the cluster (the datapath's --cluster-cidr)
	podGateway     = "10.244.0.1"    // the node's address on each pod's veth (this node's pod CIDR is 10.244.0.0/24)
	serviceCIDR    = "10.96.0.0/12"
	databaseIP     = "192.168.100.10" // a "database" outside the cluster, in a namespace of its own
	databaseGW     = "192.168.100.1"
	databasePort   = 5432
	uplinkNodeIP   = "172.18.0.2" // the node's own address on its uplink
	uplinkRouterIP = "172.18.0.1"
)

// setUpIsolation prepares the new mount namespace: nothing mounted here may reach the host, /proc
// must show the new PID namespace (netns helpers find threads through it), and /run/netns is a
// private tmpfs so that `ip netns` names exist only for this demo.
func setUpIsolation() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc for the new PID namespace: %w", err)
	}
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mount a private /run/netns: %w", err)
	}
	return nil
}

// setUpNode turns the demo's network namespace into a node: loopback (the API server listens
// there), forwarding between pods, and an uplink with a default route, as a real node has, so
// that a packet to a ClusterIP without endpoints is routed and meets the datapath's reject
// rather than "network unreachable".
func setUpNode() error {
	err := netnstest.SetUpNode(map[string]string{
		"ipv4/ip_forward":             "1",
		"ipv4/conf/all/rp_filter":     "0",
		"ipv4/conf/default/rp_filter": "0",
	})
	if err != nil {
		return err
	}
	// The uplink leads to a namespace that forwards nothing: the demo's "outside world".
	if _, err := newSandbox("uplink", uplinkRouterIP, uplinkNodeIP, "uplink0"); err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP(uplinkRouterIP), Dst: nil})
}

// sandbox is a network namespace joined to the node by a veth pair, named so that
// `ip netns exec <name> ...` works inside the demo: the network half of a pod.
type sandbox struct {
	netnstest.VethNetns
	ip string
	// env and resolvConf are what the kubelet stand-in gives the pod's processes.
	env        []string
	resolvConf string

	mu      sync.Mutex
	closers []io.Closer
}

// newSandbox creates the namespace name with address ip on its eth0, and hostDev on the node
// side holding gateway. Both ends carry /32s with explicit routes, as many CNI plugins do: the
// pod sends everything to the node, and the node routes each pod address to its veth, so every
// packet between pods (and every reply to a DNATed one) crosses the node's netfilter hooks.
func newSandbox(name, ip, gateway, hostDev string) (*sandbox, error) {
	s := &sandbox{ip: ip, VethNetns: netnstest.VethNetns{
		Name:      name,
		HostDev:   hostDev,
		HostAddrs: []string{gateway + "/32"},
		Addrs:     []string{ip + "/32"},
	}}
	if err := s.Create(); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return s, nil
}

// runServer starts a serving podProcess, stopped (by its PID) with the sandbox.
func (s *sandbox) runServer(p podProcess) error {
	p.ResolvConf = s.resolvConf
	cmd, err := s.start(p, os.Stdout)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.closers = append(s.closers, processCloser{cmd})
	s.mu.Unlock()
	return nil
}

// processCloser kills a pod's process and reaps it.
type processCloser struct{ cmd *exec.Cmd }

func (p processCloser) Close() error {
	_ = p.cmd.Process.Kill()
	return p.cmd.Wait()
}

// destroy closes the servers, deletes the veth pair and the namespace's name.
func (s *sandbox) destroy() {
	s.mu.Lock()
	for _, c := range s.closers {
		c.Close()
	}
	s.closers = nil
	s.mu.Unlock()
	s.Delete()
}

// listen opens a TCP listener inside the namespace. A socket belongs to the namespace it was
// created in, so the server can then run on any thread.
func (s *sandbox) listen(port int) (net.Listener, error) {
	var l net.Listener
	err := netnstest.Run(s.NS, func() (err error) {
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s:%d: %w", s.Name, port, err)
	}
	s.mu.Lock()
	s.closers = append(s.closers, l)
	s.mu.Unlock()
	return l, nil
}

// serveHTTP answers every HTTP request on port with answer, as the demo's backend pods do.
func (s *sandbox) serveHTTP(port int, answer string) error {
	l, err := s.listen(port)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: podhttp.Answer(answer), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(l) }()
	return nil
}

// serveGreeting writes greeting to every TCP connection on port and closes it, as a database
// server greets its clients.
func (s *sandbox) serveGreeting(port int, greeting string) error {
	l, err := s.listen(port)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting+"\n")
			c.Close()
		}
	}()
	return nil
}

// dial connects from inside the namespace, as a process in the pod would.
func (s *sandbox) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := netnstest.Run(s.NS, func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// get sends one HTTP request from the namespace on a new connection (no keep-alive: the
// datapath picks an endpoint per connection) and returns the trimmed answer.
func (s *sandbox) get(ctx context.Context, url string) (string, error) {
	return podhttp.Get(ctx, url, s.dial, requestTimeout)
}

// requestTimeout bounds each of the demo's HTTP requests.
const requestTimeout = 3 * time.Second

// readGreeting connects to address from the namespace and returns the first line it is sent.
func (s *sandbox) readGreeting(ctx context.Context, address string) (string, error) {
	c, err := s.dial(ctx, "tcp4", address)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(string(line)), nil
}
