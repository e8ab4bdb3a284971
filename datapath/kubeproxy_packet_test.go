//go:build upstreamdiff

package datapath

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/published"
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
	playInTheKernel(t, startKubeProxyNode(t).program)
}

// TestFlowScenariosWithKubeProxy is TestFlowScenariosInTheKernel with kube-proxy's rules (and
// its conntrack cleanup), as TestPacketScenariosWithKubeProxy.
func TestFlowScenariosWithKubeProxy(t *testing.T) {
	playFlowsInTheKernel(t, startKubeProxyNode(t).program, true)
}

// TestReplacingKubeProxy plays README "On a live cluster" on node-a with real packets: kube-proxy
// serves a Service, our Proxier programs the node beside it, then kube-proxy stops and its
// --cleanup removes its rules. New connections must reach every endpoint at each step, and a
// connection opened through kube-proxy's rules must go on with its pod after they are gone.
func TestReplacingKubeProxy(t *testing.T) {
	node := startKubeProxyNode(t)
	var pods []*testPod
	for _, name := range backendNames {
		p := newPod(t, name, "")
		p.serveTCPNamingPeer(t, 8080)
		p.serveTCPLines(t, 9090)
		pods = append(pods, p)
	}
	client := newPod(t, "client", "")
	svc := makeService("backend", "10.96.2.10", tcp("http", 80, 8080), tcp("lines", 90, 9090))
	var eps []ep
	for _, p := range pods {
		eps = append(eps, readyEP(p.ip, "node-a"))
	}
	services, endpointSlices := []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{makeSlice(svc, "backend-1", eps...)}
	cfg := packetScenario{family: corev1.IPv4Protocol}.config()
	everyPod := scenarioWant{reach: backendNames}

	node.program(t, cfg, services, endpointSlices)
	expectReached(t, client, "10.96.2.10:80", everyPod)
	open := openFlow(t, client, corev1.ProtocolTCP, "10.96.2.10:90")
	first := open.ask()
	if !slices.Contains(backendNames, first) {
		t.Fatalf("a connection through kube-proxy's rules: answer %q, want one of %v", first, backendNames)
	}

	programOurs(t, cfg, services, endpointSlices)
	expectReached(t, client, "10.96.2.10:80", everyPod)

	node.last.stop()
	if out, err := exec.Command(node.binary, "--cleanup", "--v=2").CombinedOutput(); err != nil {
		t.Fatalf("kube-proxy --cleanup: %v\n%s", err, out)
	}
	for _, family := range []string{"ip", "ip6"} {
		if out, err := exec.Command("nft", "list", "table", family, "kube-proxy").CombinedOutput(); err == nil {
			t.Fatalf("after kube-proxy --cleanup, its table %s is still there:\n%s", family, out)
		}
	}
	expectReached(t, client, "10.96.2.10:80", everyPod)
	if again := open.ask(); again != first {
		t.Errorf("the connection opened through kube-proxy's rules answered %q after they were removed; want %q, its pod", again, first)
	}
}

// BenchmarkConnectionRateKubeProxy is BenchmarkConnectionRate at 10k Services with kube-proxy's
// rules in place of ours: the same pods, Services, NAT floor and connections. kube-proxy programs
// the node once (a minute or two); -count repeats the measurement alone.
func BenchmarkConnectionRateKubeProxy(b *testing.B) {
	node := startKubeProxyNode(b)
	const n = 10000
	w := newConnectionRateWorkload(b, n)
	node.program(b, packetScenario{family: corev1.IPv4Protocol}.config(), asCreated(w.services), asCreated(w.slices))
	b.Run(fmt.Sprintf("services=%d", n), w.measure)
}

// asCreated returns copies of the fixtures as a client creates them: without the
// resourceVersion and UID that the fixtures carry as if read from an API server.
func asCreated[T apiObject](objects []T) []T {
	out := make([]T, len(objects))
	for i, obj := range objects {
		obj = obj.DeepCopyObject().(T)
		obj.SetResourceVersion("")
		obj.SetUID("")
		out[i] = obj
	}
	return out
}

// startKubeProxyNode starts a control plane for node-a's kube-proxy, stopped when t ends.
func startKubeProxyNode(t testing.TB) *kubeProxyNode {
	t.Helper()
	requireDatapath(t)
	assets, upstream := os.Getenv("KUBEBUILDER_ASSETS"), os.Getenv("UPSTREAM_ASSETS")
	if assets == "" || upstream == "" {
		t.Fatal("needs KUBEBUILDER_ASSETS and UPSTREAM_ASSETS (make test-upstream-diff sets both)")
	}
	logs := t.TempDir()
	if dir := os.Getenv("UPSTREAMDIFF_LOGS"); dir != "" {
		logs = dir
	}
	log, err := os.Create(filepath.Join(logs, t.Name()+"-control-plane.log"))
	if err != nil {
		t.Fatal(err)
	}
	controlplane.DiscardLogs()
	env := controlplane.New(assets, log)
	// This namespace has no default route to pick the advertised address from.
	apiServer := env.ControlPlane.GetAPIServer().Configure()
	apiServer.Set("advertise-address", nodeIP)
	apiServer.Set("service-cluster-ip-range", controlplane.DualStackServiceClusterIPRange) // the IPv6 scenarios
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the control plane: %v", err)
		}
	})
	kubeconfig := filepath.Join(logs, t.Name()+".kubeconfig")
	if _, err := controlplane.WriteAdminKubeconfig(env, "kube-proxy", kubeconfig); err != nil {
		t.Fatal(err)
	}
	// The API server's warnings (on the scenarios' external IPs) are no finding here.
	cfg.WarningHandler = rest.NoWarnings{}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &kubeProxyNode{c: c, binary: filepath.Join(upstream, "kube-proxy"), kubeconfig: kubeconfig, logs: logs}
}

// kubeProxyNode is node-a as upstream kube-proxy programs it, from the objects of one
// scenario at a time.
type kubeProxyNode struct {
	c          kubernetes.Interface
	binary     string
	kubeconfig string
	logs       string
	runs       int
	last       *kubeProxyProcess // the kube-proxy program started last
}

// program publishes the scenario's Node, Services and slices, starts kube-proxy, and waits
// until its rules hold them; when t ends it stops kube-proxy, deletes its tables and the
// objects.
func (n *kubeProxyNode) program(t testing.TB, cfg Config, services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) func([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	ctx := context.Background()
	nodes := n.c.CoreV1().Nodes()
	node, err := createRetrying(func() (*corev1.Node, error) {
		return nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName,
			Labels: map[string]string{corev1.LabelTopologyZone: cfg.Zone}}}, metav1.CreateOptions{})
	})
	if err != nil {
		t.Fatalf("create Node %s: %v", cfg.NodeName, err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeInternalIP, Address: nodeIPv6}}
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	objects := &publishedObjects{c: n.c, scenario: newPublishedSet(), sentinel: newPublishedSet()}
	t.Cleanup(func() {
		objects.deleteAll(t)
		if err := nodes.Delete(ctx, node.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete Node %s: %v", node.Name, err)
		}
	})
	objects.publish(t, services, endpointSlices) // before kube-proxy starts: in its first lists

	n.runs++
	logPath := filepath.Join(n.logs, fmt.Sprintf("kube-proxy-%s-%02d.log", strings.Split(t.Name(), "/")[0], n.runs))
	kubeProxy := n.start(t, logPath)
	n.last = kubeProxy
	t.Cleanup(func() {
		kubeProxy.stop()
		for _, family := range []string{"ip", "ip6"} {
			// Only this test's private namespace has them (requireDatapath).
			out, err := exec.Command("nft", "delete", "table", family, "kube-proxy").CombinedOutput()
			if err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("nft delete table %s kube-proxy: %v: %s", family, err, out)
			}
		}
	})
	t.Logf("kube-proxy's log: %s", logPath)
	// Its first sync may come before it has read its Node's zone (another informer); the
	// round published once both proxiers have it is synced with it.
	hasZone := func() bool { return kubeProxy.hasZone(cfg.Zone) }
	if !kubeProxy.poll(10*time.Second, hasZone) {
		// kube-proxy v1.37.2 can miss the zone altogether: it adds the handler of its Node's
		// topology labels to an informer that already runs, and only then registers its
		// proxiers with that handler; the Node the informer replays to it may come before
		// them (the handler then records the labels as told), and only a later change of the
		// labels reaches the proxiers. Change the zone, and change it back.
		for _, zone := range []string{cfg.Zone + "-moved", cfg.Zone} {
			current, err := nodes.Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			current.Labels[corev1.LabelTopologyZone] = zone
			if _, err := nodes.Update(ctx, current, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		kubeProxy.await(t, "both proxiers have their Node's zone "+cfg.Zone+", after it changed and changed back", hasZone)
	}
	kubeProxy.awaitRules(t, objects.publish(t, services, endpointSlices))
	return func(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) {
		// As in a cluster, a deleted Service goes before its slices (the garbage collector
		// deletes them after it): kube-proxy syncs the one before it sees the other.
		if objects.deletes(services) {
			kubeProxy.awaitRules(t, objects.publish(t, services, slices.Collect(maps.Values(objects.scenario.slices))))
		}
		// A sync deletes stale conntrack entries after it writes the rules. Syncs run one
		// at a time, so once a second round (the sentinel alone changes) is in the rules,
		// the sync of the first has finished.
		for range 2 {
			kubeProxy.awaitRules(t, objects.publish(t, services, endpointSlices))
		}
	}
}

// publishedObjects are a scenario's Services and slices in the API server, and a sentinel
// Service (with its slices) that each publish changes last.
type publishedObjects struct {
	c                  kubernetes.Interface
	scenario, sentinel publishedSet
	round              int32
}

// publishedSet is what the API server returned of the Services and slices written, by name.
type publishedSet struct {
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
}

func newPublishedSet() publishedSet {
	return publishedSet{services: map[string]*corev1.Service{}, slices: map[string]*discoveryv1.EndpointSlice{}}
}

// The sentinel Service, in both families (each has a kube-proxy proxier of its own): its port
// and its endpoints' port are the publish round, so the rules tell which round kube-proxy has
// synced.
const sentinelName = "kube-proxy-sentinel"

var (
	sentinelClusterIPs = map[corev1.IPFamily]string{corev1.IPv4Protocol: "10.96.255.250", corev1.IPv6Protocol: "fd00:10:96::fffa"}
	sentinelEndpoints  = map[corev1.IPFamily]string{corev1.IPv4Protocol: "10.255.0.1", corev1.IPv6Protocol: "fd00:10:255::1"}
)

// sentinel returns the sentinel Service and its slices for a round.
func sentinel(port int32) (*corev1.Service, []*discoveryv1.EndpointSlice) {
	families := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	svc := makeService(sentinelName, sentinelClusterIPs[families[0]], tcp("round", port, port))
	svc.Spec.ClusterIPs = []string{sentinelClusterIPs[families[0]], sentinelClusterIPs[families[1]]}
	svc.Spec.IPFamilies, svc.Spec.IPFamilyPolicy = families, knftables.PtrTo(corev1.IPFamilyPolicyRequireDualStack)
	var endpointSlices []*discoveryv1.EndpointSlice
	for _, family := range families {
		slice := makeSlice(svc, sentinelName+"-"+strings.ToLower(string(family)), readyEP(sentinelEndpoints[family], "node-b"))
		slice.AddressType = discoveryv1.AddressType(family)
		endpointSlices = append(endpointSlices, slice)
	}
	return svc, endpointSlices
}

// publish makes the API server hold these Services and slices (in namespace default) and no
// other of the scenario's, then changes the sentinel; it returns the sentinel's new port.
// Each kind's watch delivers its events in order, so once kube-proxy's rules hold that port
// its informers have delivered every change before it, and the sync that programmed the port
// took them all.
func (p *publishedObjects) publish(t testing.TB, services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) (sentinelPort int32) {
	t.Helper()
	ctx := context.Background()
	api, sliceAPI := p.c.CoreV1().Services("default"), p.c.DiscoveryV1().EndpointSlices("default")
	publishAll(t, api, p.scenario.services, services)
	for _, svc := range services {
		current := p.scenario.services[svc.Name]
		if !equality.Semantic.DeepEqual(current.Status, svc.Status) {
			current.Status = svc.Status
			updated, err := api.UpdateStatus(ctx, current, metav1.UpdateOptions{})
			if err != nil {
				t.Fatalf("update the status of Service %s: %v", svc.Name, err)
			}
			p.scenario.services[svc.Name] = updated
		}
	}
	publishAll(t, sliceAPI, p.scenario.slices, endpointSlices)
	p.round++
	port := 1000 + p.round
	sentinelService, sentinelSlices := sentinel(port)
	publishAll(t, api, p.sentinel.services, []*corev1.Service{sentinelService})
	publishAll(t, sliceAPI, p.sentinel.slices, sentinelSlices)
	return port
}

// deletes tells whether publishing services would delete one of the Services published.
func (p *publishedObjects) deletes(services []*corev1.Service) bool {
	for name := range p.scenario.services {
		if !slices.ContainsFunc(services, func(svc *corev1.Service) bool { return svc.Name == name }) {
			return true
		}
	}
	return false
}

// deleteAll deletes what publish wrote.
func (p *publishedObjects) deleteAll(t testing.TB) {
	t.Helper()
	api, sliceAPI := p.c.CoreV1().Services("default"), p.c.DiscoveryV1().EndpointSlices("default")
	for _, set := range []publishedSet{p.scenario, p.sentinel} {
		publishAll(t, sliceAPI, set.slices, nil)
		publishAll(t, api, set.services, nil)
	}
}

// apiObject is a typed API object (*corev1.Service, *discoveryv1.EndpointSlice).
type apiObject interface {
	metav1.Object
	runtime.Object
}

// objectAPI is a typed client of one kind of namespaced object.
type objectAPI[T apiObject] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// publishAll creates or updates each of want through api, deletes the objects of have that
// want lacks, and leaves have holding what the API server returned, by name. Creates and
// deletes run in parallel (a benchmark's node has thousands of objects); updates, a scenario's
// few, in want's order. publish changes the sentinel only after all returned.
func publishAll[T apiObject](t testing.TB, api objectAPI[T], have map[string]T, want []T) {
	t.Helper()
	ctx := context.Background()
	wanted := map[string]bool{}
	for _, obj := range want {
		wanted[obj.GetName()] = true
	}
	var gone []string
	for name := range have {
		if !wanted[name] {
			gone = append(gone, name)
		}
	}
	err := published.Parallel(len(gone), func(i int) error {
		if err := api.Delete(ctx, gone[i], metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s: %w", gone[i], err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	for _, name := range gone {
		delete(have, name)
	}
	var fresh []T
	for _, obj := range want {
		if _, ok := have[obj.GetName()]; !ok {
			fresh = append(fresh, obj)
		}
	}
	created := make([]T, len(fresh))
	err = published.Parallel(len(fresh), func(i int) (err error) {
		created[i], err = createRetrying(func() (T, error) { return api.Create(ctx, fresh[i], metav1.CreateOptions{}) })
		return err
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	for _, obj := range want {
		old, ok := have[obj.GetName()]
		if !ok {
			continue
		}
		obj = obj.DeepCopyObject().(T)
		obj.SetResourceVersion(old.GetResourceVersion())
		updated, err := api.Update(ctx, obj, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update %T %s: %v", obj, obj.GetName(), err)
		}
		have[obj.GetName()] = updated
	}
	for _, obj := range created {
		have[obj.GetName()] = obj
	}
}

// createRetrying creates an object through create and returns what the API server made of it,
// retrying while the address or node port of the scenario before is still held.
func createRetrying[T any](create func() (T, error)) (T, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		obj, err := create()
		if err == nil || !apierrors.IsInvalid(err) || time.Now().After(deadline) {
			return obj, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kubeProxyProcess is one kube-proxy run.
type kubeProxyProcess struct {
	cmd     *exec.Cmd
	log     string
	exited  chan struct{} // closed when it has exited, with waitErr set
	waitErr error
}

// start runs kube-proxy for node-a, logging to logPath.
func (n *kubeProxyNode) start(t testing.TB, logPath string) *kubeProxyProcess {
	t.Helper()
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &kubeProxyProcess{log: logPath, exited: make(chan struct{}), cmd: exec.Command(n.binary,
		"--kubeconfig="+n.kubeconfig,
		"--proxy-mode=nftables",
		"--hostname-override=node-a",
		"--cluster-cidr="+clusterCIDRv4+","+clusterCIDRv6,
		"--metrics-bind-address="+kubeProxyMetrics,
		"--healthz-bind-address="+kubeProxyHealthz,
		// No sysctl beyond this namespace: nf_conntrack_max is the host's.
		"--conntrack-max-per-core=0",
		"--v=4")} // 4: it logs when it has its Node's topology labels
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); log.Close(); close(p.exited) }()
	return p
}

// stop stops kube-proxy by its PID: SIGTERM, then SIGKILL after 10 s.
func (p *kubeProxyProcess) stop() {
	select {
	case <-p.exited: // stopped already: its PID may be another process's by now
		return
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// hasZone says whether kube-proxy's log says that both proxiers (one per family) were last
// given zone as their Node's topology label.
func (p *kubeProxyProcess) hasZone(zone string) bool {
	out, _ := os.ReadFile(p.log)
	given := map[string]bool{} // by ipFamily: the last labels had zone
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, "Updated proxier node topology labels") {
			continue
		}
		for _, family := range []string{"IPv4", "IPv6"} {
			if strings.Contains(line, fmt.Sprintf("ipFamily=%q", family)) {
				given[family] = strings.Contains(line, fmt.Sprintf("%q", zone))
			}
		}
	}
	return given["IPv4"] && given["IPv6"]
}

// awaitRules waits until kube-proxy's rules, in both families, hold the sentinel Service on
// port and its endpoint on the same port (see publishedObjects.publish).
func (p *kubeProxyProcess) awaitRules(t testing.TB, port int32) {
	t.Helper()
	for family, table := range map[corev1.IPFamily]string{corev1.IPv4Protocol: "ip", corev1.IPv6Protocol: "ip6"} {
		service := fmt.Sprintf("%s . tcp . %d ", sentinelClusterIPs[family], port)
		endpoint := fmt.Sprintf("dnat to %s", net.JoinHostPort(sentinelEndpoints[family], strconv.Itoa(int(port))))
		if family == corev1.IPv4Protocol {
			endpoint = fmt.Sprintf("dnat to %s:%d", sentinelEndpoints[family], port)
		}
		p.await(t, fmt.Sprintf("its %s rules hold %q and %q", family, service, endpoint), func() bool {
			// Only this test's private namespace has the table (requireDatapath).
			out, _ := exec.Command("nft", "list", "table", table, "kube-proxy").Output()
			rules := string(out)
			return strings.Contains(rules, service) && strings.Contains(rules, endpoint)
		})
	}
}

// await polls done until it holds, failing t if kube-proxy exits or a minute passes first.
func (p *kubeProxyProcess) await(t testing.TB, what string, done func() bool) {
	t.Helper()
	if p.poll(time.Minute, done) {
		return
	}
	select {
	case <-p.exited:
		t.Fatalf("kube-proxy exited (%v) before %s; see %s", p.waitErr, what, p.log)
	default:
		t.Fatalf("a minute passed and not %s; see %s", what, p.log)
	}
}

// poll calls done every 50 ms until it holds (true), or kube-proxy exits or wait passes
// (false).
func (p *kubeProxyProcess) poll(wait time.Duration, done func() bool) bool {
	for deadline := time.Now().Add(wait); !done(); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.exited:
			return false
		default:
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
