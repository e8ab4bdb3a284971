package main

// Network programming latency with real packets (Kubernetes' SLI of the same name, end to end):
// with the datapath workload's Services programmed on the node, a pod of one Service turns
// NotReady, and later Ready again; a client loops new TCP connections through the Service's
// ClusterIP; we measure the time from the pod status write until no new connection reaches the
// pod (resp. the first one reaches it again). The same run measures ours (our manager's
// endpoints controllers and node agent, one process) and upstream's (kube-controller-manager and
// kube-proxy), each on a fresh control plane, in this program's private network namespace.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/published"
)

const (
	// The probe Service's two pods: addresses on this namespace's loopback, so that the
	// ClusterIP's DNAT (output hook, as for any client on the node) sends to them.
	probePodA, probePodB = "10.250.0.1", "10.250.0.2"
	probePort            = 8080
	// quietWindow without a connection to the pod (while the client reaches the other one)
	// tells that the node stopped sending it new connections.
	quietWindow = time.Second
	// changeSpacing keeps the changes apart, so that each is measured alone: kube-proxy's
	// --min-sync-period (1 s) would otherwise hold the next one back.
	changeSpacing = 1200 * time.Millisecond
	eventTimeout  = 30 * time.Second
)

// acceptLog records when each probe pod accepted connections.
type acceptLog struct {
	mu sync.Mutex
	at map[string][]time.Time // pod IP → accept times (trimmed by the measurements)
}

func (l *acceptLog) add(ip string, t time.Time) {
	l.mu.Lock()
	l.at[ip] = append(l.at[ip], t)
	l.mu.Unlock()
}

// after returns the first and last accept at ip after t, and how many.
func (l *acceptLog) after(ip string, t time.Time) (first, last time.Time, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.at[ip] {
		if a.After(t) {
			if n == 0 {
				first = a
			}
			last, n = a, n+1
		}
	}
	return first, last, n
}

// forget drops what was recorded before t.
func (l *acceptLog) forget(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, times := range l.at {
		kept := times[:0]
		for _, a := range times {
			if a.After(t) {
				kept = append(kept, a)
			}
		}
		l.at[ip] = kept
	}
}

// servePods listens on both probe pods' addresses and records every accepted connection.
func servePods(ctx context.Context) (*acceptLog, error) {
	log := &acceptLog{at: map[string][]time.Time{}}
	for _, ip := range []string{probePodA, probePodB} {
		if err := requirePrivateNetns(); err != nil {
			return nil, err
		}
		if out, err := exec.Command("ip", "addr", "replace", ip+"/32", "dev", "lo").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip addr replace %s dev lo: %w: %s", ip, err, out)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(probePort)))
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { l.Close() })
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				log.add(ip, time.Now())
				conn.Close()
			}
		}()
	}
	return log, nil
}

// loopClient opens new connections to addr one after another until ctx ends, each closed at
// once with a reset (no TIME_WAIT to exhaust the ports).
func loopClient(ctx context.Context, addr string) {
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			time.Sleep(time.Millisecond) // refused (no endpoint yet) or timed out
			continue
		}
		_ = conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		time.Sleep(200 * time.Microsecond)
	}
}

// runNetworkProgramming measures one side ("ours" or "upstream") and returns the p50/p99 of both
// changes in milliseconds.
func runNetworkProgramming(ctx context.Context, o options, side string) (map[string]float64, error) {
	if err := deleteProxyTables(); err != nil {
		return nil, err
	}
	cp, err := startControlPlane(o.assets, o.workDir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	c := cp.client
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logf("%s: network programming: %d Services x 10 endpoints, then the probe Service", side, o.proxyServices)
	if err := createProgrammingFixtures(ctx, c, o.proxyServices); err != nil {
		return nil, err
	}
	pods, err := createProbe(ctx, c)
	if err != nil {
		return nil, err
	}
	accepts, err := servePods(ctx)
	if err != nil {
		return nil, err
	}

	procs, err := startProgrammers(o, cp, side)
	for _, p := range procs {
		defer p.stop()
	}
	if err != nil {
		return nil, err
	}
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "probe"}, &svc); err != nil {
		return nil, err
	}
	go loopClient(ctx, net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	started := time.Now()
	waitCtx, waitCancel := context.WithTimeout(ctx, proxySyncTimeout)
	defer waitCancel()
	if err := poll(waitCtx, func() (bool, error) {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return false, err
			}
		}
		_, _, a := accepts.after(probePodA, started)
		_, _, b := accepts.after(probePodB, started)
		return a > 0 && b > 0, nil
	}); err != nil {
		return nil, fmt.Errorf("the probe Service never reached both pods: %w", err)
	}
	logf("%s: the ClusterIP reaches both pods after %s; %d readiness changes each way", side, time.Since(started).Round(time.Millisecond), o.programmingFlips)

	var gone, back []time.Duration
	for i := range o.programmingFlips {
		d, err := measureChange(ctx, c, pods[0], accepts, false)
		if err != nil {
			return nil, fmt.Errorf("change %d (NotReady): %w", i, err)
		}
		gone = append(gone, d)
		if d, err = measureChange(ctx, c, pods[0], accepts, true); err != nil {
			return nil, fmt.Errorf("change %d (Ready): %w", i, err)
		}
		back = append(back, d)
	}
	// In order, so that a tail shows whether it is the first change, periodic or random.
	logf("%s: NotReady, each change in ms: %s", side, millisecondsList(gone))
	logf("%s: Ready, each change in ms: %s", side, millisecondsList(back))
	return map[string]float64{
		"notready-p50-ms": published.Milliseconds(published.Percentile(gone, 50)),
		"notready-p99-ms": published.Milliseconds(published.Percentile(gone, 99)),
		"ready-p50-ms":    published.Milliseconds(published.Percentile(back, 50)),
		"ready-p99-ms":    published.Milliseconds(published.Percentile(back, 99)),
	}, nil
}

// measureChange writes the pod's readiness and returns how long until the node followed: for
// NotReady, the last new connection the pod accepted after the write (the node sends it none
// for quietWindow while the other pod still gets them); for Ready, the first.
func measureChange(ctx context.Context, c client.Client, pod *corev1.Pod, accepts *acceptLog, ready bool) (time.Duration, error) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
	written := time.Now()
	accepts.forget(written.Add(-time.Minute))
	if err := c.Status().Update(ctx, pod); err != nil {
		return 0, err
	}
	deadline := written.Add(eventTimeout)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		first, last, _ := accepts.after(probePodA, written)
		if ready && !first.IsZero() {
			time.Sleep(time.Until(written.Add(changeSpacing)))
			return first.Sub(written), nil
		}
		if ready {
			continue
		}
		quietSince := written
		if last.After(written) {
			quietSince = last
		}
		_, _, others := accepts.after(probePodB, quietSince)
		if time.Since(quietSince) >= quietWindow && others > 0 {
			time.Sleep(time.Until(written.Add(changeSpacing)))
			return max(last.Sub(written), 0), nil
		}
	}
	return 0, fmt.Errorf("pod %s ready=%v: the node did not follow within %s", pod.Name, ready, eventTimeout)
}

// createProgrammingFixtures creates the datapath workload's Services and EndpointSlices as
// selectorless Services (no controller touches them; both proxies program them).
func createProgrammingFixtures(ctx context.Context, c client.Client, services int) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: proxyNodeName},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}}}
	if err := c.Create(ctx, node); err != nil {
		return err
	}
	return published.Parallel(services, func(i int) error {
		svc, slice := proxyService(i, 10, corev1.ServiceTypeClusterIP)
		svc.Spec.Selector = nil
		if err := c.Create(ctx, svc); err != nil {
			return fmt.Errorf("create Service %s: %w", svc.Name, err)
		}
		return c.Create(ctx, slice)
	})
}

// createProbe creates the probe Service and its two ready pods on this node.
func createProbe(ctx context.Context, c client.Client) ([]*corev1.Pod, error) {
	labels := map[string]string{"app": "probe"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "probe"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(probePort)}}}}
	if err := c.Create(ctx, svc); err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	for i, ip := range []string{probePodA, probePodB} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("probe-%d", i), Labels: labels},
			Spec: corev1.PodSpec{NodeName: proxyNodeName, Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10",
				Ports: []corev1.ContainerPort{{ContainerPort: probePort}}}}}}
		if err := c.Create(ctx, pod); err != nil {
			return nil, err
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			return nil, err
		}
		pods = append(pods, pod)
	}
	return pods, nil
}

// startProgrammers starts the side's endpoint controllers and node proxy, at the client QPS of
// the comparison and each with its default sync periods.
func startProgrammers(o options, cp *controlPlane, side string) ([]*process, error) {
	qps, burst := "--kube-api-qps="+strconv.Itoa(o.qps), "--kube-api-burst="+strconv.Itoa(2*o.qps)
	if side == "ours" {
		p, err := startProcess(o.workDir, o.manager,
			"--kubeconfig="+cp.kubeconfig, "--controllers=endpoints", "--datapath", "--conntrack-max-per-core=0",
			"--node-name="+proxyNodeName, "--cluster-cidr="+proxyClusterCIDR,
			"--metrics-bind-address=0", "--health-probe-bind-address=0", "--healthz-bind-address=127.0.0.1:10256",
			qps, burst)
		if err != nil {
			return nil, err
		}
		return []*process{p}, nil
	}
	kcm, err := startProcess(o.workDir, filepath.Join(o.upstream, "kube-controller-manager"),
		"--kubeconfig="+cp.kubeconfig, "--controllers=endpoint,endpointslice,endpointslicemirroring",
		"--leader-elect=false", "--secure-port=0", qps, burst, "--v=1")
	if err != nil {
		return nil, err
	}
	kp, err := startProcess(o.workDir, filepath.Join(o.upstream, "kube-proxy"),
		"--kubeconfig="+cp.kubeconfig, "--proxy-mode=nftables", "--hostname-override="+proxyNodeName,
		"--cluster-cidr="+proxyClusterCIDR, "--metrics-bind-address="+proxyMetricsAddr,
		"--healthz-bind-address=127.0.0.1:10256", "--conntrack-max-per-core=0", qps, burst, "--v=1")
	if err != nil {
		return []*process{kcm}, err
	}
	return []*process{kcm, kp}, nil
}

// buildManager builds our manager binary into dir (from this checkout, as `make build`).
func buildManager(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "manager")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build the manager (run from the repository's root): %w", err)
	}
	return bin, nil
}

// deleteProxyTables deletes what a previous proxy left in this private namespace (kube-proxy
// does not clean up when stopped), so that each side starts from an empty ruleset.
func deleteProxyTables() error {
	if err := requirePrivateNetns(); err != nil {
		return err
	}
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return fmt.Errorf("nft list tables: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line) // "table <family> <name>"
		if len(fields) != 3 {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", fields[1], fields[2]).CombinedOutput(); err != nil {
			return fmt.Errorf("nft delete table %s %s: %w: %s", fields[1], fields[2], err, out)
		}
	}
	return nil
}

// compareProgramming runs the network programming workload on both sides, o.runs times each,
// ours first (a kube-proxy table left behind would otherwise serve our probe's ClusterIP).
func compareProgramming(ctx context.Context, o options, fail func(error)) []figure {
	sides := map[string]map[string][]float64{"ours": {}, "upstream": {}}
	var err error
	if o.manager, err = buildManager(ctx, o.workDir); err != nil {
		fail(err)
		return nil
	}
	for range o.runs {
		for _, side := range []string{"ours", "upstream"} {
			if ctx.Err() != nil {
				fail(ctx.Err())
				return nil
			}
			if side == "ours" && o.upstreamOnly {
				continue
			}
			figures, err := runNetworkProgramming(ctx, o, side)
			if err != nil {
				fail(fmt.Errorf("network programming, %s: %w", side, err))
				continue
			}
			for k, v := range figures {
				sides[side][k] = append(sides[side][k], v)
			}
		}
	}
	if err := deleteProxyTables(); err != nil {
		fail(err)
	}
	what := fmt.Sprintf("at %d Services, pod status write -> ", o.proxyServices)
	ours, upstream := sides["ours"], sides["upstream"]
	return []figure{
		compare("network programming: "+what+"no new connection to a NotReady pod, p50", "ms", ours["notready-p50-ms"], upstream["notready-p50-ms"], 1, 0.1),
		compare("network programming: "+what+"no new connection to a NotReady pod, p99", "ms", ours["notready-p99-ms"], upstream["notready-p99-ms"], 1, 0.2),
		compare("network programming: "+what+"first connection to a Ready pod, p50", "ms", ours["ready-p50-ms"], upstream["ready-p50-ms"], 1, 0.1),
		compare("network programming: "+what+"first connection to a Ready pod, p99", "ms", ours["ready-p99-ms"], upstream["ready-p99-ms"], 1, 0.2),
	}
}

func millisecondsList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatFloat(published.Milliseconds(d), 'f', 1, 64)
	}
	return strings.Join(parts, " ")
}
