//go:build upstreamdiff

package upstreamdiff

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kube-clusterip/kube-clusterip/controllers/endpoints"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

type cluster struct {
	name string
	c    client.Client
}

// start runs a control plane of its own for one side, logging into logs.
func start(t *testing.T, logs, name string) (*rest.Config, string, client.Client) {
	log, err := os.Create(filepath.Join(logs, name+"-control-plane.log"))
	if err != nil {
		t.Fatal(err)
	}
	env := controlplane.New(os.Getenv("KUBEBUILDER_ASSETS"), log)
	// Dual-stack, for the scenarios of IPv6 and dual-stack Services.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", controlplane.DualStackServiceClusterIPRange)
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the %s control plane: %v", name, err)
		}
	})
	kc := filepath.Join(logs, name+".kubeconfig")
	if _, err := controlplane.WriteAdminKubeconfig(env, "admin", kc); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, kc, c
}

// TestSameObjectsAsKubeControllerManager runs kube-controller-manager's endpoint controllers and
// ours, each on a control plane of its own, through the same scenarios (every scenario in a
// namespace of its own, then its change, then node changes), and compares the Endpoints and
// EndpointSlices both publish once each side has settled. Pod UIDs, slice names and the order that
// depends on them, and the trigger-time annotation (its presence depends on how syncs fell) are
// left out of the comparison; see README "Deliberate differences" for the differences excused.
//
//	make test-upstream-diff
func TestSameObjectsAsKubeControllerManager(t *testing.T) {
	kcmBinary := filepath.Join(os.Getenv("UPSTREAM_ASSETS"), "kube-controller-manager")
	if _, err := os.Stat(kcmBinary); err != nil {
		t.Fatalf("%v: run make test-upstream-diff, which builds kube-controller-manager", err)
	}
	logs := t.TempDir()
	if dir := os.Getenv("UPSTREAMDIFF_LOGS"); dir != "" {
		logs = dir
	}
	ctx := context.Background()
	ctrl.SetLogger(logr.Discard())
	_, kc, upC := start(t, logs, "upstream")
	ourCfg, _, ourC := start(t, logs, "ours")

	startKubeControllerManager(t, kcmBinary, logs, kc)
	runOurControllers(t, ourCfg)

	clusters := []cluster{{"upstream", upC}, {"ours", ourC}}
	for _, cl := range clusters {
		createNodes(t, ctx, cl.c)
	}
	// Both sides publish a first Service before the scenarios start, so that neither reads them
	// all in its first list while the other syncs them one by one.
	for _, cl := range clusters {
		must(t, cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}))
		must(t, cl.c.Create(ctx, kit.MakeService("probe", "probe").Selector(app).TCPPort("", 80, 80).Obj()))
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			var ep corev1.Endpoints
			if cl.c.Get(ctx, client.ObjectKey{Namespace: "probe", Name: "probe"}, &ep) == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s published nothing in a minute (logs in %s)", cl.name, logs)
			}
		}
	}
	var namespaces []string
	for _, sc := range scenarios {
		namespaces = append(namespaces, sc.name)
		for _, cl := range clusters {
			must(t, cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sc.name}}))
			must(t, sc.setup(ctx, cl.c, sc.name))
		}
	}
	compare(t, ctx, clusters, namespaces, "setup", nil)
	for _, sc := range scenarios {
		if sc.change == nil {
			continue
		}
		for _, cl := range clusters {
			must(t, sc.change(ctx, cl.c, sc.name))
		}
	}
	compare(t, ctx, clusters, namespaces, "change", nil)
	for _, cl := range clusters {
		var node corev1.Node
		must(t, cl.c.Get(ctx, client.ObjectKey{Name: "node-b"}, &node))
		node.Labels[corev1.LabelTopologyZone] = "zone-c"
		must(t, cl.c.Update(ctx, &node))
	}
	// A node that moves zone resyncs the Services hinted by zone at once (upstream: at their next
	// change). A backoff timer of unknownNodeRetries may fire on either side of a Node change.
	nodeChangeExcused := []string{"trafficdist", "prefersamenode", "auto", unknownNodeRetries}
	compare(t, ctx, clusters, namespaces, "node-b moved to zone-c", nodeChangeExcused)
	for _, cl := range clusters {
		must(t, cl.c.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}))
	}
	// Any node change that can shift the zones' CPU shares resyncs every topology-mode Auto
	// Service (upstream: only those its topology cache finds overloaded), and that sync leaves out
	// the pods of the deleted node.
	compare(t, ctx, clusters, namespaces, "node-a deleted", nodeChangeExcused)
}

// TestTakingOverFromKubeControllerManager takes over from kube-controller-manager on a live
// control plane, as README "On a live cluster" says: its endpoint controllers publish every
// scenario and stop, then ours start. Once they have settled, the Endpoints and EndpointSlices
// must be the ones it published, ours in place of its, and no slice of its left beside them.
func TestTakingOverFromKubeControllerManager(t *testing.T) {
	kcmBinary := filepath.Join(os.Getenv("UPSTREAM_ASSETS"), "kube-controller-manager")
	logs := t.TempDir()
	ctx := context.Background()
	ctrl.SetLogger(logr.Discard())
	cfg, kc, c := start(t, logs, "takeover")
	stopKCM := startKubeControllerManager(t, kcmBinary, logs, kc)
	createNodes(t, ctx, c)
	var namespaces []string
	for _, sc := range scenarios {
		namespaces = append(namespaces, sc.name)
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sc.name}}))
		must(t, sc.setup(ctx, c, sc.name))
	}
	theirs := []cluster{{"kube-controller-manager", c}}
	published := settle(t, ctx, theirs, namespaces, "kube-controller-manager")[0]

	stopKCM()
	// Creation times count in seconds: ours start in a later one than its last slice.
	time.Sleep(1100 * time.Millisecond)
	runOurControllers(t, cfg)
	// Ours have written every Service once the probe Service created after them has its Endpoints
	// (a settled state can come before that: nothing changes while ours list the cluster).
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}))
	must(t, c.Create(ctx, kit.MakeService("probe", "probe").Selector(app).TCPPort("", 80, 80).Obj()))
	for deadline := time.Now().Add(time.Minute); c.Get(ctx, client.ObjectKey{Namespace: "probe", Name: "probe"}, &corev1.Endpoints{}) != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("our controllers published nothing in a minute")
		}
	}
	afterwards := settle(t, ctx, theirs, namespaces, "ours, after kube-controller-manager")[0]
	for _, ns := range namespaces {
		if published[ns] != afterwards[ns] {
			t.Errorf("%s: kube-controller-manager's objects (-) and ours after taking over (+):\n%s", ns, lineDiff(published[ns], afterwards[ns]))
		}
	}
}

// startKubeControllerManager runs kube-controller-manager's endpoint controllers against the
// control plane of kubeconfig until t ends or the returned stop is called.
func startKubeControllerManager(t *testing.T, binary, logs, kubeconfig string) (stop func()) {
	log, err := os.Create(filepath.Join(logs, filepath.Base(kubeconfig)+".kube-controller-manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	kcm := exec.Command(binary, "--kubeconfig="+kubeconfig,
		"--controllers=endpoint,endpointslice,endpointslicemirroring", "--leader-elect=false", "--secure-port=0", "--v=2")
	kcm.Stdout, kcm.Stderr = log, log
	kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := kcm.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = kcm.Process.Signal(syscall.SIGTERM)
			_ = kcm.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// runOurControllers runs our endpoints controllers against cfg's control plane until t ends.
func runOurControllers(t *testing.T, cfg *rest.Config) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: clientgoscheme.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := endpoints.SetupWithManager(mgr, endpoints.Options{}); err != nil {
		t.Fatal(err)
	}
	runManager(t, mgr)
}

// createNodes creates the scenarios' two Nodes, Ready and with CPU, so that topology-mode Auto
// shares endpoints among their zones.
func createNodes(t *testing.T, ctx context.Context, c client.Client) {
	for _, n := range []*corev1.Node{kit.MakeNode("node-a").Zone("zone-a").AllocatableCPU("4").Ready(true).Obj(),
		kit.MakeNode("node-b").Zone("zone-b").AllocatableCPU("4").Ready(true).Obj()} {
		status := n.Status
		must(t, c.Create(ctx, n))
		n.Status = status
		must(t, c.Status().Update(ctx, n))
	}
}

// runManager runs mgr until t ends, then checks it stopped cleanly.
func runManager(t *testing.T, mgr manager.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// settledFor is how long a side's objects must stay unchanged to count as settled: longer than
// the first retries of upstream's controllers (1 s, then 2 s), which a sync that found its cache
// behind its own last write waits for.
const settledFor = 5 * time.Second

// compare waits until each side's objects stop changing, then reports every namespace whose
// objects differ, except the excused ones.
func compare(t *testing.T, ctx context.Context, clusters []cluster, namespaces []string, phase string, excused []string) {
	t.Helper()
	// Both sides settle together: a change one side makes on a timer (upstream retries some
	// syncs with backoff, and so do we where upstream does) is not then seen on one side only.
	dumps := settle(t, ctx, clusters, namespaces, phase)
	up, ours := dumps[0], dumps[1]
	for _, ns := range namespaces {
		if slices.Contains(excused, ns) {
			continue
		}
		if up[ns] != ours[ns] {
			t.Errorf("[%s] %s differs:\n%s", phase, ns, lineDiff(up[ns], ours[ns]))
		}
	}
}

// settle waits until no cluster's objects in the namespaces have changed for settledFor (a
// minute at most), and returns each cluster's dumps by namespace.
func settle(t *testing.T, ctx context.Context, clusters []cluster, namespaces []string, phase string) []map[string]string {
	t.Helper()
	dumpAll := func(cl cluster) map[string]string {
		d := map[string]string{}
		for _, ns := range namespaces {
			d[ns] = dump(t, ctx, cl.c, ns)
		}
		return d
	}
	last := make([]map[string]string, len(clusters))
	var since time.Time
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		changed := false
		for i, cl := range clusters {
			if d := dumpAll(cl); !maps.Equal(d, last[i]) {
				last[i], changed = d, true
			}
		}
		if changed {
			since = time.Now()
		} else if time.Since(since) >= settledFor {
			return last
		}
	}
	t.Logf("[%s] the clusters did not settle together", phase)
	return last
}

var ourToUpstream = strings.NewReplacer(
	endpointrules.EndpointsControllerName, "endpoint-controller",
	endpointrules.SliceControllerName, endpointrules.UpstreamSliceControllerName,
	endpointrules.MirroringControllerName, endpointrules.UpstreamMirroringControllerName,
)

func dump(t *testing.T, ctx context.Context, c client.Client, ns string) string {
	var eps corev1.EndpointsList
	var sliceList discoveryv1.EndpointSliceList
	must(t, c.List(ctx, &eps, client.InNamespace(ns)))
	must(t, c.List(ctx, &sliceList, client.InNamespace(ns)))
	var out []string
	js := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	for _, e := range eps.Items {
		e.ObjectMeta = cleanMeta(e.ObjectMeta)
		for _, ss := range e.Subsets {
			for k, l := range [][]corev1.EndpointAddress{ss.Addresses, ss.NotReadyAddresses} {
				for j := range l {
					if l[j].TargetRef != nil {
						l[j].TargetRef.UID, l[j].TargetRef.ResourceVersion = "", ""
					}
					out = append(out, fmt.Sprintf("EP %s subset ports=%s %s %s", e.Name, js(ss.Ports), []string{"ready", "notready"}[k], js(l[j])))
				}
			}
			if len(ss.Addresses)+len(ss.NotReadyAddresses) == 0 {
				out = append(out, fmt.Sprintf("EP %s subset ports=%s empty", e.Name, js(ss.Ports)))
			}
		}
		e.Subsets = nil
		out = append(out, "EP "+e.Name+" meta "+js(e.ObjectMeta))
	}
	sort.Slice(sliceList.Items, func(i, j int) bool {
		a, b := sliceList.Items[i], sliceList.Items[j]
		ka, kb := js(a.Ports)+string(a.AddressType)+a.Labels[discoveryv1.LabelServiceName], js(b.Ports)+string(b.AddressType)+b.Labels[discoveryv1.LabelServiceName]
		if ka != kb {
			return ka < kb
		}
		return len(a.Endpoints) > len(b.Endpoints)
	})
	for _, s := range sliceList.Items {
		s.ObjectMeta = cleanMeta(s.ObjectMeta)
		s.Name = ""
		for i := range s.Endpoints {
			if s.Endpoints[i].TargetRef != nil {
				s.Endpoints[i].TargetRef.UID, s.Endpoints[i].TargetRef.ResourceVersion = "", ""
			}
			out = append(out, fmt.Sprintf("ES ports=%s %s", js(s.Ports), js(s.Endpoints[i])))
		}
		n := len(s.Endpoints)
		s.Endpoints = nil
		out = append(out, fmt.Sprintf("ES meta size=%d %s", n, js(s)))
	}
	// Events: each distinct one once (upstream repeats some on every retry), but for the API
	// server's own and the Warnings only ours record (see README, Deliberate differences).
	var events corev1.EventList
	must(t, c.List(ctx, &events, client.InNamespace(ns)))
	for _, e := range events.Items {
		if slices.Contains(eventsNotCompared, e.Reason) {
			continue
		}
		line := fmt.Sprintf("EV %s %s %s/%s %s", e.Type, e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		if !slices.Contains(out, line) {
			out = append(out, line)
		}
	}
	sort.Strings(out)
	return ourToUpstream.Replace(strings.Join(out, "\n"))
}

// eventsNotCompared are the reasons of Events one side records for reasons of its own: the API
// server's repair loop, and our findings.
var eventsNotCompared = []string{"ClusterIPNotAllocated", endpoints.ReasonTargetPortUnresolved, endpoints.ReasonSelectorMatchesNoPod}

func cleanMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	m.UID, m.ResourceVersion, m.CreationTimestamp, m.ManagedFields, m.Generation = "", "", metav1.Time{}, nil, 0
	m.GenerateName = ""
	for i := range m.OwnerReferences {
		m.OwnerReferences[i].UID = ""
	}
	delete(m.Annotations, "endpoints.kubernetes.io/last-change-trigger-time")
	if len(m.Annotations) == 0 {
		m.Annotations = nil
	}
	return m
}

type scenario struct {
	name   string
	setup  func(ctx context.Context, c client.Client, ns string) error
	change func(ctx context.Context, c client.Client, ns string) error
}

func createPod(ctx context.Context, c client.Client, p *corev1.Pod) error {
	status := p.Status
	if err := c.Create(ctx, p); err != nil {
		return err
	}
	p.Status = status
	return c.Status().Update(ctx, p)
}

func pod(ns, name string, labels map[string]string, node string, ready bool, ips ...string) *kit.PodWrapper {
	return kit.MakePod(name, ns).Labels(labels).Node(node).IPs(ips...).Ready(ready)
}

// podsThenService creates n pods named p0000..., alternating between the two nodes, with IPs
// under prefix (a /16), ready as ready(i) says, and then the Service "s" selecting them: the
// Service's first sync sees them all, so both sides pack its slices from the same start.
func podsThenService(ctx context.Context, c client.Client, ns string, n int, prefix string, ready func(int) bool) error {
	for i := range n {
		p := pod(ns, fmt.Sprintf("p%04d", i), app, []string{"node-a", "node-b"}[i%2], ready(i),
			fmt.Sprintf("%s.%d.%d", prefix, i/250, i%250+1))
		if err := createPod(ctx, c, p.Obj()); err != nil {
			return err
		}
	}
	return c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("p", 80, 8080).Obj())
}

// deletePods deletes the pods podsThenService named index(0), ..., index(n-1).
func deletePods(ctx context.Context, c client.Client, ns string, n int, index func(int) int) error {
	for k := range n {
		if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%04d", index(k)), Namespace: ns}}); err != nil {
			return err
		}
	}
	return nil
}

func all(fs ...error) error {
	for _, err := range fs {
		if err != nil {
			return err
		}
	}
	return nil
}

var app = map[string]string{"app": "x"}

func svcWithPorts(ns, name string, ports ...corev1.ServicePort) *kit.ServiceWrapper {
	w := kit.MakeService(name, ns).Selector(app)
	for _, p := range ports {
		w.Port(p)
	}
	return w
}

// unknownNodeRetries names the scenario with a pod on a Node that does not exist.
const unknownNodeRetries = "unknown-node"

var scenarios = []scenario{
	{name: "basic", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, svcWithPorts(ns, "s", corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("web")},
				corev1.ServicePort{Name: "raw", Port: 81, TargetPort: intstr.FromInt32(9000), Protocol: corev1.ProtocolUDP}).Labels(map[string]string{"team": "a"}).Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").ContainerPorts(kit.TCPContainerPort("web", 8080)).Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", false, "10.244.0.2").ContainerPorts(kit.TCPContainerPort("web", 8080)).Obj()),
			createPod(ctx, c, pod(ns, "p3", app, "node-b", true).ContainerPorts(kit.TCPContainerPort("web", 8080)).Obj()),
			createPod(ctx, c, pod(ns, "p4", app, "node-a", true, "10.244.0.4").ContainerPorts(kit.TCPContainerPort("web", 8081)).Obj()),
			createPod(ctx, c, pod(ns, "p5", app, "node-a", true, "10.244.0.5").Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var p corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "p2"}, &p); err != nil {
			return err
		}
		p.Status.Conditions = []corev1.PodCondition{kit.ReadyCondition(true)}
		return c.Status().Update(ctx, &p)
	}},
	{name: "notready-published", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).PublishNotReadyAddresses().Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", false, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", true, "10.244.0.2").Obj()),
		)
	}},
	{name: "headless-noports", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).Headless().Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Mutate(func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "h1", "s" }).Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", false, "10.244.0.2").Mutate(func(p *corev1.Pod) { p.Spec.Hostname, p.Spec.Subdomain = "h2", "other" }).Obj()),
		)
	}},
	{name: "headless-ports", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).Headless().TCPPort("a", 80, 8080).Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Mutate(func(p *corev1.Pod) { p.Spec.Subdomain = "s" }).Obj()),
		)
	}},
	{name: "phases", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
			createPod(ctx, c, pod(ns, "ok", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "done", app, "node-a", false, "10.244.0.2").Phase(corev1.PodSucceeded).Obj()),
			createPod(ctx, c, pod(ns, "failed", app, "node-a", false, "10.244.0.3").Phase(corev1.PodFailed).Obj()),
			createPod(ctx, c, pod(ns, "pending", app, "node-a", false, "10.244.0.4").Phase(corev1.PodPending).Obj()),
			createPod(ctx, c, pod(ns, "term", app, "node-b", true, "10.244.0.5").Mutate(func(p *corev1.Pod) { p.Finalizers = []string{"x/y"} }).Obj()),
			createPod(ctx, c, pod(ns, "termnr", app, "node-b", false, "10.244.0.6").Mutate(func(p *corev1.Pod) { p.Finalizers = []string{"x/y"} }).Obj()),
			createPod(ctx, c, pod(ns, "v6", app, "node-a", true, "fd00::8").Obj()),
			createPod(ctx, c, pod(ns, "dup", app, "node-a", true, "10.244.0.1").Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		for _, n := range []string{"term", "termnr"} {
			if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: ns}}); err != nil {
				return err
			}
		}
		return nil
	}},
	// Both sides retry a Service with a pod on an unknown Node on backoff timers (1 s, 2 s, 4 s,
	// ...) that go on firing after the pod is gone, each a sync that reads the Nodes as they are
	// then; the Node changes at the end are compared without this scenario (unknownNodeRetries).
	{name: unknownNodeRetries, setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
			createPod(ctx, c, pod(ns, "ok", app, "node-b", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "unknownnode", app, "node-zz", true, "10.244.0.7").Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		return c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unknownnode", Namespace: ns}})
	}},
	{name: "notready-terminating-published", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).PublishNotReadyAddresses().Obj()),
			createPod(ctx, c, pod(ns, "term", app, "node-b", true, "10.244.0.5").Mutate(func(p *corev1.Pod) { p.Finalizers = []string{"x/y"} }).Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		return c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "term", Namespace: ns}})
	}},
	{name: "many", setup: func(ctx context.Context, c client.Client, ns string) error {
		return podsThenService(ctx, c, ns, 230, "10.245", func(i int) bool { return i%7 != 0 })
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		return deletePods(ctx, c, ns, 40, func(k int) int { return k * 3 })
	}},
	{name: "truncate", setup: func(ctx context.Context, c client.Client, ns string) error {
		return podsThenService(ctx, c, ns, 1005, "10.246", func(i int) bool { return i%200 != 0 })
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		return deletePods(ctx, c, ns, 10, func(k int) int { return k*7 + 1 })
	}},
	{name: "dualstack-headless", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1", "fd00::1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", false, "10.244.0.2", "fd00::2").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).Headless().IPFamilyPolicy(corev1.IPFamilyPolicyPreferDualStack).TCPPort("x", 80, 8080).Obj()),
		)
	}},
	{name: "dualstack-clusterip", setup: func(ctx context.Context, c client.Client, ns string) error {
		v6First := []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1", "fd00::1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", false, "10.244.0.2", "fd00::2").Obj()),
			createPod(ctx, c, pod(ns, "v4only", app, "node-a", true, "10.244.0.3").Obj()),
			createPod(ctx, c, pod(ns, "v6only", app, "node-b", true, "fd00::4").Obj()),
			c.Create(ctx, kit.MakeService("both", ns).Selector(app).IPFamilyPolicy(corev1.IPFamilyPolicyRequireDualStack).TCPPort("x", 80, 8080).Obj()),
			c.Create(ctx, kit.MakeService("v6first", ns).Selector(app).IPFamilyPolicy(corev1.IPFamilyPolicyPreferDualStack).Families(v6First...).TCPPort("x", 80, 8080).Obj()),
			c.Create(ctx, kit.MakeService("v6", ns).Selector(app).Families(corev1.IPv6Protocol).TCPPort("x", 80, 8080).Obj()),
			c.Create(ctx, kit.MakeService("upgrade", ns).Selector(app).TCPPort("x", 80, 8080).Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		// A single-stack Service turns dual-stack, and a dual-stack one single-stack.
		for name, policy := range map[string]corev1.IPFamilyPolicy{"upgrade": corev1.IPFamilyPolicyPreferDualStack, "both": corev1.IPFamilyPolicySingleStack} {
			var svc corev1.Service
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &svc); err != nil {
				return err
			}
			svc.Spec.IPFamilyPolicy = &policy
			if policy == corev1.IPFamilyPolicySingleStack {
				svc.Spec.IPFamilies, svc.Spec.ClusterIPs = svc.Spec.IPFamilies[:1], svc.Spec.ClusterIPs[:1]
			}
			if err := c.Update(ctx, &svc); err != nil {
				return err
			}
		}
		return nil
	}},
	{name: "sidecar", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Mutate(func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "proxy", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways), Ports: []corev1.ContainerPort{kit.TCPContainerPort("web", 15001)}},
					{Name: "init", Image: "x", Ports: []corev1.ContainerPort{kit.TCPContainerPort("web2", 15002)}}}
			}).Obj()),
			c.Create(ctx, svcWithPorts(ns, "s", corev1.ServicePort{Name: "a", Port: 80, TargetPort: intstr.FromString("web")},
				corev1.ServicePort{Name: "b", Port: 81, TargetPort: intstr.FromString("web2")}).Obj()),
		)
	}},
	{name: "prefersamenode", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", true, "10.244.0.2").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).TrafficDistribution("PreferSameNode").Obj()),
			c.Create(ctx, kit.MakeService("z", ns).Selector(app).TCPPort("", 80, 8080).TrafficDistribution("PreferSameZone").Obj()),
			c.Create(ctx, kit.MakeService("auto", ns).Selector(app).TCPPort("", 80, 8080).Annotations(map[string]string{"service.kubernetes.io/topology-mode": "Auto"}).Obj()),
		)
	}},
	{name: "auto", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-a", true, "10.244.0.2").Obj()),
			createPod(ctx, c, pod(ns, "p3", app, "node-b", true, "10.244.0.3").Obj()),
			createPod(ctx, c, pod(ns, "p4", app, "node-b", false, "10.244.0.4").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Annotations(map[string]string{"service.kubernetes.io/topology-mode": "Auto"}).Obj()),
			c.Create(ctx, kit.MakeService("few", ns).Selector(map[string]string{"app": "few"}).TCPPort("", 80, 8080).Annotations(map[string]string{"service.kubernetes.io/topology-mode": "Auto"}).Obj()),
			createPod(ctx, c, pod(ns, "f1", map[string]string{"app": "few"}, "node-a", true, "10.244.1.1").Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "s"}, &svc); err != nil {
			return err
		}
		delete(svc.Annotations, "service.kubernetes.io/topology-mode")
		return c.Update(ctx, &svc)
	}},
	{name: "relabel", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", true, "10.244.0.2").Obj()),
			createPod(ctx, c, pod(ns, "p3", app, "node-b", true, "10.244.0.3").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var p1, p2 corev1.Pod
		if err := all(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "p1"}, &p1), c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "p2"}, &p2)); err != nil {
			return err
		}
		p1.Labels = map[string]string{"app": "other"}
		p2.Status.PodIP, p2.Status.PodIPs = "10.244.0.22", []corev1.PodIP{{IP: "10.244.0.22"}}
		return all(c.Update(ctx, &p1), c.Status().Update(ctx, &p2))
	}},
	{name: "user-edits", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
			c.Create(ctx, kit.MakeService("gone", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var ep corev1.Endpoints
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "s"}, &ep); err != nil {
			return err
		}
		ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: "10.9.9.9"})
		return all(c.Update(ctx, &ep), c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: ns}}))
	}},
	{name: "user-edits-slice", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
			c.Create(ctx, kit.MakeService("t", ns).Selector(app).TCPPort("", 80, 8080).Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var s1, s2 discoveryv1.EndpointSliceList
		if err := all(c.List(ctx, &s1, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: "s"}),
			c.List(ctx, &s2, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: "t"})); err != nil {
			return err
		}
		s2.Items[0].Endpoints = append(s2.Items[0].Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.9.9.8"}})
		return all(c.Delete(ctx, &s1.Items[0]), c.Update(ctx, &s2.Items[0]))
	}},
	{name: "mirror-big", setup: func(ctx context.Context, c client.Client, ns string) error {
		ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: ns},
			Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Name: "a", Port: 1}, {Name: "b", Port: 2, Protocol: corev1.ProtocolUDP}}},
				{Addresses: []corev1.EndpointAddress{{IP: "10.3.0.1"}, {IP: "10.3.0.2", TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "x", Namespace: ns}}},
					Ports: []corev1.EndpointPort{{Name: "a", Port: 1}}}}}
		for i := range 1200 {
			ep.Subsets[0].Addresses = append(ep.Subsets[0].Addresses, corev1.EndpointAddress{IP: fmt.Sprintf("10.2.%d.%d", i/250, i%250+1)})
		}
		for i := range 30 {
			ep.Subsets[0].NotReadyAddresses = append(ep.Subsets[0].NotReadyAddresses, corev1.EndpointAddress{IP: fmt.Sprintf("10.4.0.%d", i+1)})
		}
		return all(c.Create(ctx, kit.MakeService("s", ns).TCPPort("a", 80, 1).Obj()), c.Create(ctx, ep))
	}},
	{name: "protocols", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, svcWithPorts(ns, "s",
				corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
				corev1.ServicePort{Name: "dnstcp", Port: 53, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "h2", Port: 443, TargetPort: intstr.FromInt32(8443), AppProtocol: ptr.To("kubernetes.io/h2c")},
				corev1.ServicePort{Name: "sctp", Port: 9, TargetPort: intstr.FromInt32(9), Protocol: corev1.ProtocolSCTP}).Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").ContainerPorts(
				corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
				corev1.ContainerPort{Name: "dnst", ContainerPort: 5354, Protocol: corev1.ProtocolTCP}).Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", true, "10.244.0.2").ContainerPorts(
				corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}).Obj()),
		)
	}},
	{name: "trafficdist", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).TrafficDistribution("PreferClose").Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", app, "node-b", true, "10.244.0.2").Obj()),
			createPod(ctx, c, pod(ns, "p3", app, "node-b", false, "10.244.0.3").Obj()),
		)
	}},
	{name: "externalname", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).ExternalName("example.com").Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
		)
	}},
	{name: "selector-change", setup: func(ctx context.Context, c client.Client, ns string) error {
		return all(
			c.Create(ctx, kit.MakeService("s", ns).Selector(app).TCPPort("", 80, 8080).Labels(map[string]string{"a": "1"}).Obj()),
			createPod(ctx, c, pod(ns, "p1", app, "node-a", true, "10.244.0.1").Obj()),
			createPod(ctx, c, pod(ns, "p2", map[string]string{"app": "y"}, "node-b", true, "10.244.0.2").Obj()),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var s corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "s"}, &s); err != nil {
			return err
		}
		s.Spec.Selector = map[string]string{"app": "y"}
		s.Labels = map[string]string{"a": "2", "b": "3"}
		s.Spec.Ports[0].Port = 90
		return c.Update(ctx, &s)
	}},
	{name: "mirror", setup: func(ctx context.Context, c client.Client, ns string) error {
		ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: ns, Labels: map[string]string{"x": "y"}, Annotations: map[string]string{"note": "1"}},
			Subsets: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{{IP: "10.1.0.1", Hostname: "a", NodeName: ptr.To("node-a")}, {IP: "10.1.0.2"}},
					NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.1.0.3"}},
					Ports:             []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}},
				{Addresses: []corev1.EndpointAddress{{IP: "10.1.0.4"}, {IP: "fd00::4"}},
					Ports: []corev1.EndpointPort{{Name: "http", Port: 8081, Protocol: corev1.ProtocolTCP}, {Name: "udp", Port: 53, Protocol: corev1.ProtocolUDP}}},
			}}
		return all(
			c.Create(ctx, kit.MakeService("s", ns).TCPPort("http", 80, 8080).Obj()),
			c.Create(ctx, ep),
			c.Create(ctx, kit.MakeService("skip", ns).TCPPort("http", 80, 8080).Obj()),
			c.Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "skip", Namespace: ns, Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}},
				Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.1.0.9"}}, Ports: []corev1.EndpointPort{{Port: 1}}}}}),
			c.Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "nosvc", Namespace: ns},
				Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.1.0.9"}}, Ports: []corev1.EndpointPort{{Port: 1}}}}}),
		)
	}, change: func(ctx context.Context, c client.Client, ns string) error {
		var ep corev1.Endpoints
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "s"}, &ep); err != nil {
			return err
		}
		ep.Subsets = ep.Subsets[:1]
		ep.Labels["x"] = "z"
		return all(c.Update(ctx, &ep), c.Create(ctx, kit.MakeService("nosvc", ns).TCPPort("http", 80, 8080).Obj()))
	}},
}

func lineDiff(a, b string) string {
	inA, inB := map[string]int{}, map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		inA[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		inB[l]++
	}
	var out []string
	for l, n := range inA {
		if inB[l] < n {
			out = append(out, "- upstream: "+l)
		}
	}
	for l, n := range inB {
		if inA[l] < n {
			out = append(out, "+ ours:     "+l)
		}
	}
	sort.Strings(out)
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}
