// Package clusterdns runs a real CoreDNS as the cluster DNS of a test, the demo or a diagnose
// spec: the binary hack/coredns-assets.sh builds into KUBEBUILDER_ASSETS, reading Services and
// EndpointSlices through the test's kube-apiserver with its kubernetes plugin.
package clusterdns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultClusterDomain is the zone CoreDNS serves Services under (kubelet's --cluster-domain).
const DefaultClusterDomain = "cluster.local"

// CacheSeconds is how long our Corefile lets CoreDNS cache and clients keep an answer. kubeadm's
// Corefile says 30 (with a 5 s minimum in the cache plugin); 1 keeps answers within a second or
// two of an EndpointSlice change, which the tests and the demo show.
const CacheSeconds = 1

// Config says where CoreDNS listens and which API server it reads.
type Config struct {
	// Kubeconfig is the API server CoreDNS's kubernetes plugin lists and watches.
	Kubeconfig string
	// DNSAddress is host:port for DNS over UDP and TCP; port 0 picks a free one. The host must
	// be an address (CoreDNS binds it with the bind plugin), so nothing listens beyond it.
	DNSAddress string
	// ClusterDomain defaults to DefaultClusterDomain.
	ClusterDomain string
	// Log receives CoreDNS's output (discarded when nil).
	Log io.Writer
	// Binary overrides the CoreDNS found in KUBEBUILDER_ASSETS.
	Binary string
}

// Server is a running CoreDNS.
type Server struct {
	// DNSAddress is where it answers, host:port.
	DNSAddress string
	// ReadyURL answers 200 once the kubernetes plugin has synced with the API server.
	ReadyURL string
	// Corefile is the configuration it runs with.
	Corefile string

	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the CoreDNS of KUBEBUILDER_ASSETS, or says how to build it.
func Binary() (string, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return "", errors.New("KUBEBUILDER_ASSETS is not set: run 'make test', or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	binary := filepath.Join(assets, "coredns")
	if _, err := os.Stat(binary); err != nil {
		return "", fmt.Errorf("coredns is missing from KUBEBUILDER_ASSETS=%s: run hack/coredns-assets.sh (hack/envtest-assets.sh runs it too)", assets)
	}
	return binary, nil
}

// Corefile is the configuration of a cluster DNS for the domain: kubeadm's default, cut to the
// plugins we build, bound to host, caching for CacheSeconds. Where kubeadm forwards other names
// to the node's resolver, it answers NXDOMAIN: the tests' namespaces have no upstream resolver,
// and a pod's search path ends with the bare name, which must fail as an unknown name does.
func Corefile(host string, dnsPort, readyPort, healthPort int, kubeconfig, clusterDomain string) string {
	return fmt.Sprintf(`.:%d {
    bind %s
    errors
    health %s
    ready %s
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl %d
    }
    template ANY ANY {
        rcode NXDOMAIN
    }
    cache %d
}
`, dnsPort, host, net.JoinHostPort(host, strconv.Itoa(healthPort)), net.JoinHostPort(host, strconv.Itoa(readyPort)),
		clusterDomain, kubeconfig, CacheSeconds, CacheSeconds)
}

// Start writes the Corefile next to the kubeconfig, starts CoreDNS and waits until it is ready
// (its kubernetes plugin has listed Services and EndpointSlices) or ctx ends.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	binary := cfg.Binary
	if binary == "" {
		var err error
		if binary, err = Binary(); err != nil {
			return nil, err
		}
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	host, port, err := net.SplitHostPort(cfg.DNSAddress)
	if err != nil {
		return nil, fmt.Errorf("DNS address %q: %w", cfg.DNSAddress, err)
	}
	dnsPort, _ := strconv.Atoi(port)
	if dnsPort == 0 {
		if dnsPort, err = freePort(host, true); err != nil {
			return nil, err
		}
	}
	readyPort, err := freePort(host, false)
	if err != nil {
		return nil, err
	}
	healthPort, err := freePort(host, false)
	if err != nil {
		return nil, err
	}
	s := &Server{
		DNSAddress: net.JoinHostPort(host, strconv.Itoa(dnsPort)),
		ReadyURL:   "http://" + net.JoinHostPort(host, strconv.Itoa(readyPort)) + "/ready",
		Corefile:   Corefile(host, dnsPort, readyPort, healthPort, cfg.Kubeconfig, cfg.ClusterDomain),
		exited:     make(chan struct{}),
	}
	corefile := filepath.Join(filepath.Dir(cfg.Kubeconfig), fmt.Sprintf("Corefile-%d", dnsPort))
	if err := os.WriteFile(corefile, []byte(s.Corefile), 0o600); err != nil {
		return nil, err
	}
	out := cfg.Log
	if out == nil {
		out = io.Discard
	}
	s.cmd = exec.Command(binary, "-conf", corefile)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	// Should the test binary die, CoreDNS goes with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(ctx, time.Minute); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls the ready plugin until it answers 200, CoreDNS exits, or timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ReadyURL, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("coredns exited before it was ready (%v)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("coredns not ready at %s after %s", s.ReadyURL, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the CoreDNS process's id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop ends CoreDNS by its PID: SIGTERM, then SIGKILL after 5 s.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// freePort asks the kernel for a free port on host (UDP and TCP both free when udp is set).
func freePort(host string, udp bool) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port on %s: %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !udp {
			return port, nil
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP on %s", host)
}
