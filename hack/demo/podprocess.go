package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/test/netnstest"

	"github.com/kube-clusterip/kube-clusterip/test/podhttp"
)

// podProcessEnv carries a podProcess to the demo binary re-executed inside a pod.
const podProcessEnv = "KUBE_CLUSTERIP_DEMO_POD_PROCESS"

// podProcess is a process of a pod, as a container's would be: it runs in the pod's network
// namespace and in a mount namespace of its own where the pod's resolv.conf is /etc/resolv.conf,
// with the environment kubelet gives the pod. It either fetches URLs and looks names up, as
// `curl` and `nslookup` in the pod would, or serves HTTP and answers with what a URL answered.
type podProcess struct {
	ResolvConf string `json:"resolvConf"`
	// Get are URLs to fetch, with $VARIABLES expanded from the pod's environment.
	Get []string `json:"get,omitempty"`
	// Lookup are names to resolve.
	Lookup []string `json:"lookup,omitempty"`
	// Serve is a port to serve on; each request is answered with Answer + " -> " + what ProxyTo
	// answered.
	Serve   int    `json:"serve,omitempty"`
	Answer  string `json:"answer,omitempty"`
	ProxyTo string `json:"proxyTo,omitempty"`
}

// podResult is one fetch or lookup of a podProcess, a JSON line on its stdout.
type podResult struct {
	Request   string   `json:"request"`            // as given: a URL or a name
	Expanded  string   `json:"expanded,omitempty"` // the URL after $VARIABLE expansion
	Addresses []string `json:"addresses,omitempty"`
	Answer    string   `json:"answer,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// start runs p in the sandbox's network namespace: the child is forked from a thread switched
// into it, and gets a new mount namespace for the resolv.conf bind mount.
func (s *sandbox) start(p podProcess, stdout io.Writer) (*exec.Cmd, error) {
	spec, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/proc/self/exe")
	// The resolver must be Go's own so that what it reads is the bind-mounted file, whatever
	// the C library would do.
	cmd.Env = append([]string{podProcessEnv + "=" + string(spec), "GODEBUG=netdns=go", "PATH=/usr/bin:/bin"}, s.env...)
	cmd.Stdout, cmd.Stderr = stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := netnstest.Run(s.NS, cmd.Start); err != nil {
		return nil, fmt.Errorf("start a process in pod %s: %w", s.Name, err)
	}
	return cmd, nil
}

// exec runs a fetching podProcess to its end and returns its results.
func (s *sandbox) exec(ctx context.Context, p podProcess) ([]podResult, error) {
	p.ResolvConf = s.resolvConf
	var out strings.Builder
	cmd, err := s.start(p, &out)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("process in pod %s: %w", s.Name, err)
	}
	var results []podResult
	dec := json.NewDecoder(strings.NewReader(out.String()))
	for dec.More() {
		var r podResult
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("output of the process in pod %s: %w", s.Name, err)
		}
		results = append(results, r)
	}
	return results, nil
}

// runPodProcess is the demo binary inside a pod.
func runPodProcess(spec string) error {
	var p podProcess
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount(p.ResolvConf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount the pod's resolv.conf: %w", err)
	}
	if p.Serve != 0 {
		return serveProxy(p)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, name := range p.Lookup {
		r := podResult{Request: name}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		cancel()
		r.Addresses, r.Error = diagnose.SortAddresses(addrs), errorText(err)
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	for _, u := range p.Get {
		if err := enc.Encode(fetch(u)); err != nil {
			return err
		}
	}
	return nil
}

// fetch expands and GETs u, noting the addresses its host resolved to.
func fetch(u string) podResult {
	r := podResult{Request: u, Expanded: os.ExpandEnv(u)}
	parsed, err := url.Parse(r.Expanded)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if net.ParseIP(parsed.Hostname()) == nil {
		addrs, err := net.DefaultResolver.LookupHost(ctx, parsed.Hostname())
		if err != nil {
			r.Error = errorText(err)
			return r
		}
		r.Addresses = diagnose.SortAddresses(addrs)
	}
	r.Answer, err = podhttp.Get(ctx, r.Expanded, nil, requestTimeout)
	r.Error = errorText(err)
	return r
}

// serveProxy answers each request on p.Serve with "p.Answer -> <what p.ProxyTo answered>".
func serveProxy(p podProcess) error {
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", p.Serve))
	if err != nil {
		return err
	}
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
			defer cancel()
			answer, err := podhttp.Get(ctx, p.ProxyTo, nil, requestTimeout)
			if err != nil {
				http.Error(w, fmt.Sprintf("%s -> %s: %v", p.Answer, p.ProxyTo, err), http.StatusBadGateway)
				return
			}
			fmt.Fprintf(w, "%s -> %s\n", p.Answer, answer)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return server.Serve(l)
}

// errorText is err's message, with a DNS error's "no such host" kept recognisable.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return "no such host " + dnsErr.Name
	}
	return err.Error()
}
