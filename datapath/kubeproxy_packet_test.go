//go:build upstreamdiff

package datapath

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
)

// kube-proxy's own endpoints, on this test's private namespace's loopback.
const (
	kubeProxyMetrics = "127.0.0.1:10249"
	kubeProxyHealthz = "127.0.0.1:10256"
)

// TestPacketScenariosWithKubeProxy plays the packet scenarios of TestPacketScenariosInTheKernel
// against upstream kube-proxy v1.37.2 in nftables mode, with the same pods and packets: the
// Services and slices go to a control plane, and a kube-proxy started for node-a programs the
// node from them. Every scenario's outcome is thus upstream's as well as ours. It runs with
// make test-upstream-diff (build tag upstreamdiff), which builds kube-proxy first.
func TestPacketScenariosWithKubeProxy(t *testing.T) {
	requireDatapath(t)
	assets, upstream := os.Getenv("KUBEBUILDER_ASSETS"), os.Getenv("UPSTREAM_ASSETS")
	if assets == "" || upstream == "" {
		t.Fatal("needs KUBEBUILDER_ASSETS and UPSTREAM_ASSETS (make test-upstream-diff sets both)")
	}
	logs := t.TempDir()
	if dir := os.Getenv("UPSTREAMDIFF_LOGS"); dir != "" {
		logs = dir
	}
	log, err := os.Create(filepath.Join(logs, "kube-proxy-control-plane.log"))
	if err != nil {
		t.Fatal(err)
	}
	env := controlplane.New(assets, log)
	// This namespace has no default route to pick the advertised address from.
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", nodeIP)
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	kubeconfig := filepath.Join(logs, "kube-proxy.kubeconfig")
	if _, err := controlplane.WriteAdminKubeconfig(env, "kube-proxy", kubeconfig); err != nil {
		t.Fatal(err)
	}
	// The API server's warnings (on the scenarios' external IPs) are no finding here.
	cfg.WarningHandler = rest.NoWarnings{}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node := &kubeProxyNode{c: c, binary: filepath.Join(upstream, "kube-proxy"), kubeconfig: kubeconfig, logs: logs}
	playInTheKernel(t, node.program)
}

// kubeProxyNode is node-a as upstream kube-proxy programs it, from the objects of one
// scenario at a time.
type kubeProxyNode struct {
	c          kubernetes.Interface
	binary     string
	kubeconfig string
	logs       string
	runs       int
}

// program publishes the scenario's Node, Services and slices, starts kube-proxy, and waits for
// its first full sync; when t ends it stops kube-proxy, deletes its tables and the objects.
func (n *kubeProxyNode) program(t *testing.T, s packetScenario, scenarioServices []*corev1.Service, scenarioSlices []*discoveryv1.EndpointSlice) {
	ctx := context.Background()
	cfg := s.config()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName, Labels: map[string]string{corev1.LabelTopologyZone: cfg.Zone}},
	}
	var undo []func() error
	nodes, services, slices := n.c.CoreV1().Nodes(), n.c.CoreV1().Services("default"), n.c.DiscoveryV1().EndpointSlices("default")
	node = createRetrying(t, func() (*corev1.Node, error) { return nodes.Create(ctx, node, metav1.CreateOptions{}) })
	undo = append(undo, func() error { return nodes.Delete(ctx, node.Name, metav1.DeleteOptions{}) })
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, svc := range scenarioServices {
		status := svc.Status
		svc = createRetrying(t, func() (*corev1.Service, error) { return services.Create(ctx, svc, metav1.CreateOptions{}) })
		undo = append(undo, func() error { return services.Delete(ctx, svc.Name, metav1.DeleteOptions{}) })
		if len(status.LoadBalancer.Ingress) > 0 {
			svc.Status = status
			if _, err := services.UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, slice := range scenarioSlices {
		createRetrying(t, func() (*discoveryv1.EndpointSlice, error) { return slices.Create(ctx, slice, metav1.CreateOptions{}) })
		undo = append(undo, func() error { return slices.Delete(ctx, slice.Name, metav1.DeleteOptions{}) })
	}
	t.Cleanup(func() {
		for _, do := range undo {
			if err := do(); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete: %v", err)
			}
		}
	})

	n.runs++
	logPath := filepath.Join(n.logs, fmt.Sprintf("kube-proxy-%02d.log", n.runs))
	stop := n.start(t, logPath)
	t.Cleanup(func() {
		stop()
		for _, family := range []string{"ip", "ip6"} {
			// Only this test's private namespace has them (requireDatapath).
			out, err := exec.Command("nft", "delete", "table", family, "kube-proxy").CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("nft delete table %s kube-proxy: %v: %s", family, err, out)
			}
		}
	})
	t.Logf("kube-proxy's log: %s", logPath)
}

// createRetrying creates an object through create and returns what the API server made of it,
// retrying while the address or node port of the scenario before is still held.
func createRetrying[T any](t *testing.T, create func() (T, error)) T {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		obj, err := create()
		if err == nil {
			return obj
		}
		if !apierrors.IsInvalid(err) || time.Now().After(deadline) {
			t.Fatalf("create: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// start runs kube-proxy for node-a, waits until it has synced its IPv4 rules once, and returns
// what stops it (by its PID).
func (n *kubeProxyNode) start(t *testing.T, logPath string) (stop func()) {
	t.Helper()
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.binary,
		"--kubeconfig="+n.kubeconfig,
		"--proxy-mode=nftables",
		"--hostname-override=node-a",
		"--cluster-cidr="+clusterCIDRv4,
		"--metrics-bind-address="+kubeProxyMetrics,
		"--healthz-bind-address="+kubeProxyHealthz,
		// No sysctl beyond this namespace: nf_conntrack_max is the host's.
		"--conntrack-max-per-core=0",
		"--v=2")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when kube-proxy has exited, with waitErr set
	var waitErr error
	go func() { waitErr = cmd.Wait(); log.Close(); close(exited) }()
	stop = func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("kube-proxy exited before its first sync (%v); see %s", waitErr, logPath)
		default:
		}
		if syncs, _ := kubeProxyFullSyncs(); syncs > 0 {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("kube-proxy did not sync within a minute; see %s", logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kubeProxyFullSyncs reads how many full syncs of its IPv4 rules kube-proxy has made.
func kubeProxyFullSyncs() (int, error) {
	resp, err := http.Get("http://" + kubeProxyMetrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "kubeproxy_sync_full_proxy_rules_duration_seconds_count{") && strings.Contains(line, `ip_family="IPv4"`) {
			fields := strings.Fields(line)
			return strconv.Atoi(fields[len(fields)-1])
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no full sync counted yet")
}
