package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/clusterdns"
)

// Request counts of the walkthrough.
const (
	spreadRequests = 30
	stickyRequests = 10
)

// demo is the walkthrough's state, inside the demo's namespaces.
type demo struct {
	opts    options
	workDir string
	hostPID int // this process as the host sees it, for nsenter
	started time.Time
	steps   int

	controlPlane *controlPlane
	client       kubernetes.Interface
	manager      *manager
	kubelet      *kubelet
	stopKubelet  context.CancelFunc
	database     *sandbox
	coreDNS      *clusterdns.Server
	clusterIPs   map[string]string // Service name -> ClusterIP
	podIPs       map[string]string // pod name -> podIP
}

// runInside runs the walkthrough in the namespaces runOutside created, then cleans up (or,
// with --keep, waits for Ctrl-C first).
func runInside(o options) error {
	d := &demo{opts: o, workDir: os.Getenv(workDirEnv), started: time.Now(), clusterIPs: map[string]string{}, podIPs: map[string]string{}}
	if err := refuseHostNamespaces(); err != nil {
		return err
	}
	// /proc still shows the host's PID namespace until setUpIsolation mounts our own.
	if self, err := os.Readlink("/proc/self"); err == nil {
		d.hostPID, _ = strconv.Atoi(self)
	}
	if err := setUpIsolation(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer d.cleanUp()

	err := d.walkThrough(ctx)
	if ctx.Err() != nil {
		fmt.Println("\ninterrupted")
		return nil
	}
	if err != nil {
		// The work directory goes away with the demo: show the logs' ends while they exist.
		printLogTail(filepath.Join(d.workDir, "manager.log"))
		printLogTail(filepath.Join(d.workDir, "control-plane.log"))
		return err
	}
	fmt.Printf("\ndemo finished in %.1fs\n", time.Since(d.started).Seconds())
	if d.opts.keep {
		if err := d.keepRunning(ctx); err != nil {
			return err
		}
	}
	return nil
}

// refuseHostNamespaces stops the demo unless it runs as the first process of a new PID
// namespace, in network and mount namespaces other than those of the process that started it:
// everything that follows mounts, adds links and programs nftables, which must never happen on
// the host (say, if someone set the environment runOutside uses by hand).
func refuseHostNamespaces() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("refusing to run outside a new PID namespace (pid %d): run the demo without %s", os.Getpid(), insideEnv)
	}
	parent := strings.Fields(os.Getenv(parentNamespacesEnv))
	if len(parent) == 0 {
		return fmt.Errorf("refusing to run: %s does not name the namespaces to stay out of", parentNamespacesEnv)
	}
	for _, kind := range []string{"net", "mnt"} {
		ours, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			return err
		}
		if slices.Contains(parent, ours) {
			return fmt.Errorf("refusing to run in the %s namespace %s of the process that started the demo", kind, ours)
		}
	}
	return nil
}

func (d *demo) walkThrough(ctx context.Context) error {
	for _, step := range []struct {
		title string
		run   func(context.Context) error
	}{
		{"Node: this network namespace plays demo-node", d.setUpNode},
		{"Control plane: etcd and kube-apiserver", d.startControlPlane},
		{"Manager: allocator with admission webhook, endpoints, datapath", d.startManager},
		{"Kubelet stand-in: pods become network namespaces", d.startKubelet},
		{"Cluster DNS: CoreDNS behind Service kube-system/kube-dns (" + clusterDNSIP + ")", d.startClusterDNS},
		{"Apply the examples: 7 Services, 3 backend pods, a client pod and 3 others", d.applyExamples},
		{"kubectl get clusterippools,svc,endpoints,endpointslices", d.showTables},
		{fmt.Sprintf("%d requests to backend-service from the client pod", spreadRequests), d.spreadRequests},
		{"Session affinity: sticky-service keeps the client on one pod", d.showStickiness},
		{"Selectorless Service: external-database reaches the database outside the cluster", d.reachDatabase},
		{"What pod/client sees: resolv.conf and Service environment variables from its kubelet", d.showPodNames},
		{"By name from the client pod: curl backend-service, its FQDN, $BACKEND_SERVICE_SERVICE_HOST", d.curlByName},
		{"multi-port-service: every port by name (80, 443, 9090)", d.curlMultiPort},
		{"frontend -> backend: frontend-1's server calls http://backend-service:80", d.curlFrontend},
		{"Another namespace and a headless Service", d.otherNamespaceAndHeadless},
		{"Readiness: backend-2 turns not ready and leaves the rotation", d.markNotReady},
		{"Scale backend to zero: connection refused at once", d.scaleToZero},
	} {
		d.steps++
		fmt.Printf("\n==> %d. %s  (%.1fs)\n", d.steps, step.title, time.Since(d.started).Seconds())
		if err := step.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", step.title, err)
		}
	}
	return nil
}

func (d *demo) setUpNode(context.Context) error {
	if err := setUpNode(); err != nil {
		return err
	}
	fmt.Printf("    node %s: uplink %s, pods get 10.244.0.x/32 on veth pairs (gateway %s)\n", nodeName, uplinkNodeIP, podGateway)
	return nil
}

func (d *demo) startControlPlane(context.Context) error {
	cp, err := startControlPlane(d.opts.repo, d.workDir)
	d.controlPlane = cp
	if err != nil {
		return err
	}
	d.client = cp.client
	fmt.Printf("    kube-apiserver %s, --service-cluster-ip-range=%s\n", cp.config.Host, serviceCIDR)
	fmt.Printf("    kubeconfig: %s\n", cp.kubeconfig)
	return nil
}

func (d *demo) startManager(ctx context.Context) error {
	m, caBundle, err := startManager(ctx, d.opts.manager, d.workDir, d.controlPlane.kubeconfig)
	d.manager = m
	if err != nil {
		return err
	}
	fmt.Printf("    %s ready (log: %s)\n", d.opts.manager, m.log)
	webhooks, err := installWebhooks(ctx, d.client, d.opts.repo, caBundle)
	if err != nil {
		return err
	}
	for _, w := range webhooks {
		fmt.Printf("    webhook: %s\n", w)
	}
	return nil
}

func (d *demo) startKubelet(ctx context.Context) error {
	d.kubelet = newKubelet(d.client, d.workDir)
	if err := d.kubelet.registerNode(ctx); err != nil {
		return err
	}
	// The kubelet's watch must end before the API server is stopped, which otherwise waits
	// for it.
	ctx, d.stopKubelet = context.WithCancel(ctx)
	if err := d.kubelet.run(ctx); err != nil {
		return err
	}
	fmt.Printf("    node/%s registered Ready; watching Pods with spec.nodeName=%s\n", nodeName, nodeName)
	return nil
}

func (d *demo) applyExamples(ctx context.Context) error {
	database, err := newSandbox("database", databaseIP, databaseGW, "vethdb")
	if err != nil {
		return err
	}
	d.database = database
	if err := database.serveGreeting(databasePort, "database: PostgreSQL-ish greeting from "+databaseIP); err != nil {
		return err
	}
	fmt.Printf("    database: network namespace \"database\" at %s:%d (outside the pod CIDR)\n", databaseIP, databasePort)

	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: otherNamespace}}
	if _, err := d.client.CoreV1().Namespaces().Create(ctx, other, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", otherNamespace, err)
	}
	for _, svc := range []*corev1.Service{backendService(), stickyService(), externalDatabaseService(),
		multiPortService(), frontendService(), headlessService(), inventoryService()} {
		if err := d.createService(ctx, svc); err != nil {
			return err
		}
	}
	//nolint:staticcheck // users still write Endpoints for selectorless Services
	if _, err := d.client.CoreV1().Endpoints(metav1.NamespaceDefault).Create(ctx, externalDatabaseEndpoints(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create endpoints external-database: %w", err)
	}
	fmt.Printf("    endpoints/external-database created: %s:%d\n", databaseIP, databasePort)
	if err := d.createPods(ctx); err != nil {
		return err
	}
	if err := waitFor(ctx, 20*time.Second, d.readyEndpointsAre("backend-service", backendPods)); err != nil {
		return fmt.Errorf("backend-service endpoints: %w", err)
	}
	if err := waitFor(ctx, 20*time.Second, d.readyEndpointsAre("sticky-service", backendPods)); err != nil {
		return fmt.Errorf("sticky-service endpoints: %w", err)
	}
	if err := waitFor(ctx, 20*time.Second, d.readyEndpointsAre("external-database", 1)); err != nil {
		return fmt.Errorf("external-database EndpointSlice (mirrored): %w", err)
	}
	for _, svc := range []*corev1.Service{multiPortService(), frontendService(), headlessService(), inventoryService()} {
		want := 1
		if svc.Name == "headless-service" {
			want = backendPods
		}
		if err := waitFor(ctx, 20*time.Second, d.readyEndpointsIn(svc.Namespace, svc.Name, want)); err != nil {
			return fmt.Errorf("%s endpoints: %w", svc.Name, err)
		}
	}
	fmt.Printf("    every pod Running and Ready; every Service has its EndpointSlice\n")
	return nil
}

// createPods creates the backend replicas and the client pod, and waits until the kubelet
// stand-in reports them Ready.
func (d *demo) createPods(ctx context.Context) error {
	pods := []*corev1.Pod{clientPod(), multiPortPod(), frontendPod(), inventoryPod()}
	for _, name := range backendPodNames {
		pods = append(pods, backendPod(name))
	}
	for _, pod := range pods {
		if _, err := d.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", pod.Name, err)
		}
	}
	for _, pod := range pods {
		var ip string
		err := waitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, error) {
			current, err := d.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			ip = current.Status.PodIP
			return endpointrules.IsPodReady(current), nil
		})
		if err != nil {
			return fmt.Errorf("pod %s never became ready: %w", pod.Name, err)
		}
		d.podIPs[pod.Name] = ip
		fmt.Printf("    pod/%s Ready, podIP %s, network namespace %q\n", pod.Name, ip, sandboxName(pod))
	}
	return nil
}

// readyEndpointsAre reports whether the Service's EndpointSlices list exactly want ready
// endpoints.
func (d *demo) readyEndpointsAre(service string, want int) func(context.Context) (bool, error) {
	return d.readyEndpointsIn(metav1.NamespaceDefault, service, want)
}

// readyEndpointsIn is readyEndpointsAre for a Service of any namespace.
func (d *demo) readyEndpointsIn(namespace, service string, want int) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		slices, err := d.client.DiscoveryV1().EndpointSlices(namespace).List(ctx,
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, slice := range slices.Items {
			for _, ep := range slice.Endpoints {
				if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
					ready++
				}
			}
		}
		return ready == want, nil
	}
}

func (d *demo) showTables(ctx context.Context) error {
	return printGetTables(ctx, d.client.CoreV1().RESTClient(), os.Stdout)
}

// client is the client pod's network namespace, where every request comes from.
func (d *demo) clientSandbox() *sandbox {
	return d.kubelet.sandbox(metav1.NamespaceDefault, clientPodName)
}

func (d *demo) serviceURL(service string) string {
	return fmt.Sprintf("http://%s:80/", d.clusterIPs[service])
}

// countAnswers sends n requests to the Service, each on a new connection, and counts the
// answering pods.
func (d *demo) countAnswers(ctx context.Context, service string, n int) (map[string]int, error) {
	counts := map[string]int{}
	for range n {
		answer, err := d.clientSandbox().get(ctx, d.serviceURL(service))
		if err != nil {
			return counts, fmt.Errorf("request to %s: %w", d.serviceURL(service), err)
		}
		counts[answer]++
	}
	return counts, nil
}

// waitForDatapath waits until each of pods (or, with none named, any pod) has answered
// through the Service: the
// EndpointSlices are written before the node agent has programmed nftables, and the demo
// should measure the datapath, not that delay.
func (d *demo) waitForDatapath(ctx context.Context, service string, pods []string) error {
	seen := map[string]bool{}
	return waitFor(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
		if answer, err := d.clientSandbox().get(ctx, d.serviceURL(service)); err == nil {
			seen[answer] = true
		}
		for _, pod := range pods {
			if !seen[pod] {
				return false, nil
			}
		}
		return len(seen) > 0, nil
	})
}

func (d *demo) spreadRequests(ctx context.Context) error {
	start := time.Now()
	if err := d.waitForDatapath(ctx, "backend-service", backendPodNames); err != nil {
		return fmt.Errorf("not every backend pod became reachable through %s: %w", d.serviceURL("backend-service"), err)
	}
	fmt.Printf("    datapath programmed: every pod reachable through %s after %dms\n", d.clusterIPs["backend-service"], time.Since(start).Milliseconds())
	fmt.Printf("    curl %s  x%d, from pod/client (%s):\n", d.serviceURL("backend-service"), spreadRequests, d.clientSandbox().ip)
	counts, err := d.countAnswers(ctx, "backend-service", spreadRequests)
	if err != nil {
		return err
	}
	printCounts(counts, backendPodNames)
	for _, pod := range backendPodNames {
		if counts[pod] == 0 {
			return fmt.Errorf("%s never answered: the datapath does not spread connections over every endpoint", pod)
		}
	}
	fmt.Printf("    ✔ all %d backend pods answered\n", len(backendPodNames))
	return nil
}

// printCounts prints one bar per pod, in the order given.
func printCounts(counts map[string]int, pods []string) {
	for _, pod := range pods {
		fmt.Printf("      %-10s %-30s %2d\n", pod, strings.Repeat("#", counts[pod]), counts[pod])
	}
}

func (d *demo) showStickiness(ctx context.Context) error {
	if err := d.waitForDatapath(ctx, "sticky-service", nil); err != nil {
		return err
	}
	fmt.Printf("    curl %s  x%d, from pod/client (sessionAffinity: ClientIP):\n", d.serviceURL("sticky-service"), stickyRequests)
	counts, err := d.countAnswers(ctx, "sticky-service", stickyRequests)
	if err != nil {
		return err
	}
	printCounts(counts, backendPodNames)
	if len(counts) != 1 {
		return fmt.Errorf("sticky-service answered from %d pods, want 1", len(counts))
	}
	for pod := range counts {
		fmt.Printf("    ✔ sticky: all %d requests answered by %s\n", stickyRequests, pod)
	}
	return nil
}

func (d *demo) reachDatabase(ctx context.Context) error {
	address := fmt.Sprintf("%s:%d", d.clusterIPs["external-database"], databasePort)
	var greeting string
	err := waitFor(ctx, 10*time.Second, func(ctx context.Context) (bool, error) {
		var err error
		greeting, err = d.clientSandbox().readGreeting(ctx, address)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", address, err)
	}
	fmt.Printf("    connect %s from pod/client -> %q\n", address, greeting)
	fmt.Printf("    ✔ the selectorless Service reached %s:%d through its user-written Endpoints\n", databaseIP, databasePort)
	return nil
}

func (d *demo) markNotReady(ctx context.Context) error {
	const notReady = "backend-2"
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := d.client.CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, notReady, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod.Status.Conditions = podConditions(false)
		for i := range pod.Status.ContainerStatuses {
			pod.Status.ContainerStatuses[i].Ready = false
		}
		_, err = d.client.CoreV1().Pods(metav1.NamespaceDefault).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	start := time.Now()
	fmt.Printf("    pod/%s status: Ready=False (as a failing readiness probe reports)\n", notReady)
	// Rounds of requests until one has no answer from the pod: that is when the datapath
	// stopped sending new connections to it (2 pods answering 30 times with one of them
	// silent by chance has odds of 2^-30).
	var counts map[string]int
	err = waitFor(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
		var err error
		counts, err = d.countAnswers(ctx, "backend-service", spreadRequests)
		return err == nil && counts[notReady] == 0, err
	})
	if err != nil {
		return fmt.Errorf("%s still answers through backend-service: %w", notReady, err)
	}
	fmt.Printf("    curl %s  x%d, %dms after the status change:\n", d.serviceURL("backend-service"), spreadRequests, time.Since(start).Milliseconds())
	printCounts(counts, backendPodNames)
	var answering []string
	for pod := range counts {
		answering = append(answering, pod)
	}
	sort.Strings(answering)
	fmt.Printf("    ✔ not ready: %s left the rotation; answering: %s\n", notReady, strings.Join(answering, ", "))
	return nil
}

func (d *demo) scaleToZero(ctx context.Context) error {
	zero := metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}
	for _, name := range backendPodNames {
		if err := d.client.CoreV1().Pods(metav1.NamespaceDefault).Delete(ctx, name, zero); err != nil {
			return fmt.Errorf("delete pod %s: %w", name, err)
		}
	}
	start := time.Now()
	fmt.Printf("    deleted pod/%s\n", strings.Join(backendPodNames, ", pod/"))
	if err := waitFor(ctx, 15*time.Second, d.readyEndpointsAre("backend-service", 0)); err != nil {
		return err
	}
	var dialErr error
	err := waitFor(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
		// Until the node agent has synced, a connection can still be sent to a deleted pod's
		// address, where it would hang: give each attempt little time.
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, dialErr = d.clientSandbox().get(ctx, d.serviceURL("backend-service"))
		return dialErr != nil && errors.Is(dialErr, syscall.ECONNREFUSED), nil
	})
	if err != nil {
		return fmt.Errorf("no \"connection refused\" from backend-service without endpoints (last: %w): %w", dialErr, err)
	}
	fmt.Printf("    curl %s, %dms after the deletion:\n", d.serviceURL("backend-service"), time.Since(start).Milliseconds())
	refusedAt := time.Now()
	_, dialErr = d.clientSandbox().get(ctx, d.serviceURL("backend-service"))
	fmt.Printf("      %v  (in %dms)\n", dialErr, time.Since(refusedAt).Milliseconds())
	if !errors.Is(dialErr, syscall.ECONNREFUSED) {
		return fmt.Errorf("want connection refused, got %w", dialErr)
	}
	fmt.Printf("    ✔ no endpoints: connection refused (the datapath rejects, nothing waits for a timeout)\n")
	return nil
}

// keepRunning brings the backend back and waits for Ctrl-C, saying how to look around.
func (d *demo) keepRunning(ctx context.Context) error {
	fmt.Printf("\n==> --keep: scaling backend back to %d and leaving everything running\n", backendPods)
	for _, name := range backendPodNames {
		if _, err := d.client.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, backendPod(name), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	enter := fmt.Sprintf("nsenter --net=/proc/%d/ns/net", d.hostPID)
	enterAll := fmt.Sprintf("nsenter --net=/proc/%d/ns/net --mount=/proc/%d/ns/mnt", d.hostPID, d.hostPID)
	fmt.Printf(`    Everything runs in the network namespace of process %d; from another terminal:
      %s kubectl --kubeconfig %s get clusterippools,svc,endpoints,endpointslices,pods -o wide
      %s ip netns exec client curl -s %s
      %s nft list table ip kube-clusterip
    Pods are network namespaces (ip netns list, inside); a Pod you create with
    spec.nodeName: %s gets one, an address and an HTTP server on its containerPorts.
    Logs: %s/{manager,control-plane}.log
    Stop: Ctrl-C here, or kill %d. Everything (processes, namespaces, files) goes away.
`, d.hostPID, enter, d.controlPlane.kubeconfig, enterAll, d.serviceURL("backend-service"), enter, nodeName, d.workDir, d.hostPID)
	<-ctx.Done()
	return nil
}

// cleanUp stops what the demo started, in order. Ending the PID namespace would kill it all
// anyway; stopping in order keeps the logs readable and etcd's data consistent.
func (d *demo) cleanUp() {
	fmt.Printf("\n==> Cleaning up\n")
	if d.kubelet != nil {
		d.stopKubelet()
		d.kubelet.stopAll()
	}
	if d.database != nil {
		d.database.destroy()
	}
	d.coreDNS.Stop()
	d.manager.stop()
	if err := d.controlPlane.stop(); err != nil {
		fmt.Printf("    stop the control plane: %v\n", err)
	}
	fmt.Printf("    stopped the manager, kube-apiserver and etcd; deleted the pod namespaces\n")
}

// printLogTail prints the last lines of a log file, if there is one.
func printLogTail(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	fmt.Printf("\n--- last lines of %s ---\n", path)
	for _, line := range lines[max(0, len(lines)-20):] {
		fmt.Println(line)
	}
}
