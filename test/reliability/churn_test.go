package reliability

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Endpoint churn (issue 12, scenario 3): endpointChanges changes to the pods behind one
// Service, one per changeInterval at most; the manager (endpoints controller and node agent)
// is killed after killAfterChanges and started again after launchAfterChanges, so that changes
// meet it down, starting and back.
const (
	endpointChanges    = 1000
	changeInterval     = 25 * time.Millisecond
	killAfterChanges   = 450
	launchAfterChanges = 520
	initialChurnPods   = 4
	churnSeed          = 12
	requestInterval    = 10 * time.Millisecond
)

var _ = Describe("the datapath under 1000 endpoint changes, with the node agent killed (SIGKILL) and restarted once", func() {
	It("answers every request through the ClusterIP, and ends with the kernel's ruleset equal to the renderer's for the final state", func(ctx SpecContext) {
		if missing := datapathMissing(); missing != "" {
			Skip("needs " + missing)
		}
		ensureNode(ctx)
		ns := testenv.NewNamespace(ctx, k8sClient, "reliability", nil)
		for i := range servedPodIPs {
			serveWeb(servedPodIP(i))
		}
		churn := newEndpointChurn(ns, map[string]string{"app": "web"})
		svc := newService(ns, "web", churn.labels)
		Expect(k8sClient.Create(ctx, svc)).To(Succeed())
		churn.start(ctx)
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, svc.Name, churn.ips(true), churn.ips(false))
			g.Expect(get(svc)).To(Succeed())
		}).Should(Succeed())

		By(fmt.Sprintf("a client sending a request through %s:80 every %s, on a new connection each", svc.Spec.ClusterIP, requestInterval))
		requests := startRequests(svc.Spec.ClusterIP, &churn.changes)
		DeferCleanup(requests.stop)

		By(fmt.Sprintf("%d endpoint changes: pods turning ready and not ready, added and deleted; always one ready", endpointChanges))
		churnDone := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(churnDone)
			for churn.changes.Load() < endpointChanges {
				next := time.After(changeInterval)
				churn.step(ctx)
				<-next
			}
		}()

		Eventually(churn.changes.Load).Should(BeNumerically(">=", killAfterChanges))
		requests.mark("the manager killed")
		By(fmt.Sprintf("SIGKILL of the manager (endpoints controller, node agent) after %d changes", churn.changes.Load()))
		manager.kill()
		Eventually(churn.changes.Load).Should(BeNumerically(">=", launchAfterChanges))
		By(fmt.Sprintf("start of a new one after %d changes; the changes go on", churn.changes.Load()))
		requests.mark("the manager starting")
		manager.launch()
		manager.waitReady()
		requests.mark("the manager ready again")
		By(fmt.Sprintf("the new manager is ready after %d changes", churn.changes.Load()))
		Eventually(churnDone).WithTimeout(4 * time.Minute).Should(BeClosed())
		requests.mark("the changes done")

		By(fmt.Sprintf("the final endpoints are published (%s); no request failed meanwhile", churn))
		Eventually(func(g Gomega) {
			expectPublished(g, ctx, ns, svc.Name, churn.ips(true), churn.ips(false))
		}).Should(Succeed())
		requests.stop()
		sent, failures := requests.result()
		fmt.Fprintf(GinkgoWriter, "%d requests, %d failed\n", sent, len(failures))
		Expect(failures).To(BeEmpty(), "%d of %d requests through the ClusterIP failed although a ready endpoint existed; the first:\n%s",
			len(failures), sent, strings.Join(failures[:min(len(failures), 20)], "\n"))
		Expect(sent).To(BeNumerically(">=", 100), "the client sent too few requests to tell")

		By("the kernel's table equals the renderer's output for the final Services and EndpointSlices")
		Eventually(func(g Gomega) {
			rendered := expectKernelTablesRendered(g, ctx)
			for _, ip := range churn.ips(true) {
				g.Expect(rendered).To(ContainSubstring(" : "+ip+" . 8080"), "the rendered table lacks ready endpoint %s", ip)
			}
		}).Should(Succeed())
	})
})

// serveWeb answers HTTP on ip:8080 with "web" (as get expects) for the spec's duration.
func serveWeb(ip string) {
	listener, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
	Expect(err).NotTo(HaveOccurred())
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "web")
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }()
	DeferCleanup(server.Close)
}

// endpointChurn drives the pods behind one Service through random endpoint changes, each on
// one of the served pod IPs, and never leaves the Service without a ready pod. The pods' HTTP
// servers outlive them (as a pod's process outlives its endpoint during graceful termination),
// so a request fails only if the datapath sends it nowhere.
type endpointChurn struct {
	ns     string
	labels map[string]string
	rand   *rand.Rand
	pods   map[int]*churnPod // by served pod IP index
	names  int

	changes               atomic.Int64
	flips, adds, removals int
}

type churnPod struct {
	pod   *corev1.Pod
	ready bool
}

func newEndpointChurn(ns string, labels map[string]string) *endpointChurn {
	return &endpointChurn{ns: ns, labels: labels, rand: rand.New(rand.NewPCG(churnSeed, churnSeed)), pods: map[int]*churnPod{}}
}

// start runs the first pods, all ready but the last; these are not counted as changes.
func (c *endpointChurn) start(ctx context.Context) {
	for i := range initialChurnPods {
		c.run(ctx, i, i < initialChurnPods-1)
	}
}

// step makes one endpoint change: a pod flips its Ready condition (half of the changes),
// a pod is added on a free IP, or a pod is deleted.
func (c *endpointChurn) step(ctx context.Context) {
	for done := false; !done; {
		switch c.rand.IntN(4) {
		case 0, 1:
			done = c.flip(ctx, c.anyPod())
		case 2:
			done = c.add(ctx)
		default:
			done = c.remove(ctx, c.anyPod())
		}
	}
	c.changes.Add(1)
}

func (c *endpointChurn) flip(ctx context.Context, slot int) bool {
	p := c.pods[slot]
	if p.ready && c.readyCount() == 1 {
		return false
	}
	p.ready = !p.ready
	testenv.SetPodStatus(ctx, k8sClient, p.pod, servedPodIP(slot), p.ready)
	c.flips++
	return true
}

func (c *endpointChurn) add(ctx context.Context) bool {
	var free []int
	for i := range servedPodIPs {
		if c.pods[i] == nil {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return false
	}
	c.run(ctx, free[c.rand.IntN(len(free))], c.rand.IntN(2) == 0)
	c.adds++
	return true
}

func (c *endpointChurn) remove(ctx context.Context, slot int) bool {
	p := c.pods[slot]
	if p.ready && c.readyCount() == 1 {
		return false
	}
	Expect(k8sClient.Delete(ctx, p.pod, client.GracePeriodSeconds(0))).To(Succeed())
	delete(c.pods, slot)
	c.removals++
	return true
}

// run creates a pod with the slot's IP.
func (c *endpointChurn) run(ctx context.Context, slot int, ready bool) {
	c.names++
	pod := runPodWithIP(ctx, c.ns, fmt.Sprintf("web-%d", c.names), servedPodIP(slot), c.labels, ready)
	c.pods[slot] = &churnPod{pod: pod, ready: ready}
}

func (c *endpointChurn) anyPod() int {
	slots := c.slots()
	return slots[c.rand.IntN(len(slots))]
}

func (c *endpointChurn) slots() []int {
	out := make([]int, 0, len(c.pods))
	for slot := range c.pods {
		out = append(out, slot)
	}
	slices.Sort(out)
	return out
}

func (c *endpointChurn) readyCount() int {
	return len(c.ips(true))
}

// ips lists the IPs of the pods that are ready (or not ready), sorted.
func (c *endpointChurn) ips(ready bool) []string {
	out := []string{}
	for _, slot := range c.slots() {
		if c.pods[slot].ready == ready {
			out = append(out, servedPodIP(slot))
		}
	}
	return sorted(out)
}

func (c *endpointChurn) String() string {
	return fmt.Sprintf("%d changes: %d Ready flips, %d pods added, %d deleted; ready at the end: %v, not ready: %v",
		c.changes.Load(), c.flips, c.adds, c.removals, c.ips(true), c.ips(false))
}

// requestLoop sends HTTP requests to a ClusterIP, each on a new connection (so that each goes
// through the datapath's DNAT afresh), and records every failure with when it happened: after
// how many endpoint changes and after which event of the scenario.
type requestLoop struct {
	changes *atomic.Int64
	begin   time.Time
	stopped chan struct{}
	done    chan struct{}
	once    sync.Once

	mu        sync.Mutex
	sent      int
	failures  []string
	event     string
	eventTime time.Time
}

func startRequests(clusterIP string, changes *atomic.Int64) *requestLoop {
	r := &requestLoop{changes: changes, begin: time.Now(), stopped: make(chan struct{}), done: make(chan struct{}),
		event: "the first request", eventTime: time.Now()}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://" + net.JoinHostPort(clusterIP, "80") + "/"
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.stopped:
				return
			case <-time.After(requestInterval):
			}
			r.record(time.Now(), request(client, url))
		}
	}()
	return r
}

// request sends one GET and checks the answer.
func request(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && string(body) != "web" {
		err = fmt.Errorf("answer %q, want \"web\"", body)
	}
	return err
}

func (r *requestLoop) record(start time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	if err != nil {
		r.failures = append(r.failures, fmt.Sprintf("request %d, sent %s after the first, after %d endpoint changes, %s after %s: %v",
			r.sent, start.Sub(r.begin).Round(time.Millisecond), r.changes.Load(), start.Sub(r.eventTime).Round(time.Millisecond), r.event, err))
	}
}

// mark notes an event of the scenario, for failures to be told relative to.
func (r *requestLoop) mark(event string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.event, r.eventTime = event, time.Now()
}

// stop ends the loop and waits for its last request.
func (r *requestLoop) stop() {
	r.once.Do(func() { close(r.stopped) })
	<-r.done
}

func (r *requestLoop) result() (sent int, failures []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, slices.Clone(r.failures)
}
