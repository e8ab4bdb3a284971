package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// podEndpoints lists the pods as ready local endpoints, by IPv4 or IPv6 address.
func podEndpoints(ipv6 bool, pods ...*testPod) []ep {
	var out []ep
	for _, p := range pods {
		ip := p.ip
		if ipv6 {
			ip = p.ip6
		}
		out = append(out, readyEP(ip, "node-a"))
	}
	return out
}

func mustSync(tb testing.TB, p *Proxier, services []*corev1.Service, slices ...*discoveryv1.EndpointSlice) {
	tb.Helper()
	if err := p.Sync(context.Background(), services, slices); err != nil {
		tb.Fatalf("sync: %v", err)
	}
}

// tcpPods creates one pod per name, each answering TCP on port.
func tcpPods(tb testing.TB, port int, names ...string) []*testPod {
	tb.Helper()
	return servingPods(tb, names, func(p *testPod) { p.serveTCP(tb, port) })
}

// udpPods creates one pod per name, each answering UDP on port.
func udpPods(tb testing.TB, port int, names ...string) []*testPod {
	tb.Helper()
	return servingPods(tb, names, func(p *testPod) { p.serveUDP(tb, port) })
}

func servingPods(tb testing.TB, names []string, serve func(*testPod)) []*testPod {
	tb.Helper()
	var pods []*testPod
	for _, name := range names {
		p := newPod(tb, name, "")
		serve(p)
		pods = append(pods, p)
	}
	return pods
}

// proxyToPods returns a new Proxier synced with svc alone, whose slice sliceName lists
// the pods as ready local endpoints by their address of svc's IP family.
func proxyToPods(tb testing.TB, svc *corev1.Service, sliceName string, pods ...*testPod) *Proxier {
	tb.Helper()
	ipv6 := ClusterIPOf(svc, corev1.IPv6Protocol) != ""
	proxier := newTestProxier(tb, nil)
	mustSync(tb, proxier, []*corev1.Service{svc}, makeSlice(svc, sliceName, podEndpoints(ipv6, pods...)...))
	return proxier
}

// countReplies makes n connections from client to addr and counts answers per pod.
func countReplies(tb testing.TB, client *testPod, addr string, n int) map[string]int {
	tb.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		reply, err := client.fetch(addr)
		if err != nil {
			tb.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		counts[strings.Split(reply, ":")[0]]++
	}
	return counts
}

func TestPacketsSpreadOverBackendPods(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "backend-0", "backend-1", "backend-2")
	client := newPod(t, "client", "")
	proxyToPods(t, makeService("backend-service", "10.96.1.10", tcp("", 80, 8080)), "backend-1", pods...)

	counts := countReplies(t, client, "10.96.1.10:80", 300)
	for _, p := range pods {
		if counts[p.name] < 60 {
			t.Errorf("pod %s got %d of 300 connections, want at least 20%%: %v", p.name, counts[p.name], counts)
		}
	}
	// From the node itself (output hook, masqueraded so the reply finds its way back).
	if reply, err := fetchFromNode("10.96.1.10:80"); err != nil || !strings.HasPrefix(reply, "backend-") {
		t.Errorf("from the node: reply %q, error %v", reply, err)
	}
}

func TestPacketsReachTheTargetPortOfEachServicePort(t *testing.T) {
	requireDatapath(t)
	pod := newPod(t, "multi", "")
	for _, port := range []int{8080, 8443, 9090} {
		pod.serveTCP(t, port)
	}
	client := newPod(t, "client", "")
	svc := makeService("multi-port-service", "10.96.1.20", tcp("http", 80, 8080), tcp("https", 443, 8443), tcp("metrics", 9090, 9090))
	proxyToPods(t, svc, "multi-1", pod)
	for port, want := range map[int]string{80: "multi:8080", 443: "multi:8443", 9090: "multi:9090"} {
		if reply, err := client.fetch(fmt.Sprintf("10.96.1.20:%d", port)); err != nil || reply != want {
			t.Errorf("port %d: reply %q, error %v; want %q", port, reply, err, want)
		}
	}
}

func TestPacketsStickToOnePodWithClientIPAffinity(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "sticky-0", "sticky-1", "sticky-2")
	client := newPod(t, "client", "")
	const timeout = time.Second
	svc := sticky(makeService("sticky-service", "10.96.1.30", tcp("", 80, 8080)), int32(timeout/time.Second))
	proxyToPods(t, svc, "sticky-1", pods...)

	counts := countReplies(t, client, "10.96.1.30:80", 50)
	if len(counts) != 1 {
		t.Fatalf("50 connections from one client reached several pods: %v", counts)
	}
	var first string
	for name := range counts {
		first = name
	}
	// Each connection refreshes the timeout, so wait it out between single attempts;
	// with three pods a new pick differs with probability 2/3 each round. The wait is
	// for the kernel's own set timer, which no fake clock reaches (the tracer checks the
	// same expiry on a fake clock, in TestTracedPackets).
	for round := 0; round < 15; round++ {
		time.Sleep(timeout + 300*time.Millisecond)
		reply, err := client.fetch("10.96.1.30:80")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(reply, first+":") {
			return
		}
	}
	t.Errorf("the client stayed on %s across 15 expired affinity timeouts", first)
}

// A full resync (periodic, or after an outside flush) rewrites a table that holds the
// anonymous maps of a sticky Service's rules; they go with their rules, not on their own.
func TestPacketsStickyServiceSurvivesAFullResync(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "resync-0", "resync-1")
	client := newPod(t, "client", "")
	svc := sticky(makeService("sticky-resync", "10.96.1.31", tcp("", 80, 8080)), 60)
	proxier := proxyToPods(t, svc, "sticky-resync-1", pods...)
	before := countReplies(t, client, "10.96.1.31:80", 5)
	if err := proxier.Resync(context.Background()); err != nil {
		t.Fatalf("full resync over a table with a sticky Service: %v", err)
	}
	after := countReplies(t, client, "10.96.1.31:80", 5)
	if len(before) != 1 || !maps.Equal(before, after) {
		t.Errorf("the client moved across a full resync: %v before, %v after", before, after)
	}
}

func TestPacketsToAServiceWithoutEndpointsAreRefusedAtOnce(t *testing.T) {
	requireDatapath(t)
	client := newPod(t, "client", "")
	backend := tcpPods(t, 8080, "backend")[0]
	empty := makeService("empty-service", "10.96.1.40", tcp("http", 80, 8080))
	live := makeService("backend-service", "10.96.1.41", tcp("http", 80, 8080))
	proxier := newTestProxier(t, nil)
	mustSync(t, proxier, []*corev1.Service{empty, live},
		makeSlice(empty, "empty-1"), makeSlice(live, "live-1", podEndpoints(false, backend)...))

	cases := []struct {
		name string
		addr string
		dial func(string) (string, error)
	}{
		{name: "no endpoints, from a pod", addr: "10.96.1.40:80", dial: client.fetch},
		{name: "no endpoints, from the node", addr: "10.96.1.40:80", dial: fetchFromNode},
		{name: "port the Service does not have", addr: "10.96.1.41:81", dial: client.fetch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := tc.dial(tc.addr)
			elapsed := time.Since(start)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("want connection refused, got %v", err)
			}
			if elapsed > 100*time.Millisecond {
				t.Errorf("refusal took %v, want < 100ms", elapsed)
			}
		})
	}
}

func TestPacketsLeaveAnEndpointThatTurnsNotReady(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "ready-0", "ready-1", "leaving")
	client := newPod(t, "client", "")
	svc := makeService("backend-service", "10.96.1.50", tcp("", 80, 8080))
	proxier := proxyToPods(t, svc, "s1", pods...)
	if counts := countReplies(t, client, "10.96.1.50:80", 60); counts["leaving"] == 0 {
		t.Fatalf("the pod never got traffic while ready: %v", counts)
	}

	eps := podEndpoints(false, pods...)
	eps[2].ready = false
	start := time.Now()
	mustSync(t, proxier, []*corev1.Service{svc}, makeSlice(svc, "s1", eps...))
	if took := time.Since(start); took > time.Second {
		t.Errorf("sync took %v, want < 1s", took)
	}
	// The Service keeps three slots for paddingHold (the third now ready-0's), then
	// Maintain moves it to two: neither leaves the kernel a way to the pod that left.
	for _, when := range []string{"right after the change", "after Maintain moved the Service to two slots"} {
		counts := countReplies(t, client, "10.96.1.50:80", 60)
		if counts["leaving"] != 0 || counts["ready-0"] == 0 || counts["ready-1"] == 0 {
			t.Errorf("%s: want the two ready pods and not the leaving one, got %v", when, counts)
		}
		time.Sleep(paddingHold)
		if err := proxier.Maintain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if dump := rulesetText(t); !strings.Contains(dump, "10.96.1.50 . tcp . 80 : goto dnat-mod-2") {
		t.Errorf("after paddingHold and Maintain the Service should dispatch over two slots:\n%s", dump)
	}
}

func TestPacketsReachTheAddressOfASelectorlessService(t *testing.T) {
	requireDatapath(t)
	db := newPod(t, "external-db", "192.168.1.100")
	db.serveTCP(t, 5432)
	client := newPod(t, "client", "")
	svc, slice := seedExternalDatabase()
	proxier := newTestProxier(t, nil)
	mustSync(t, proxier, []*corev1.Service{svc}, slice)
	if reply, err := client.fetch("10.96.0.40:5432"); err != nil || reply != "external-db:5432" {
		t.Errorf("reply %q, error %v", reply, err)
	}
}

func TestPacketsUDPFlowMovesWhenItsEndpointGoesAway(t *testing.T) {
	requireDatapath(t)
	pods := udpPods(t, 5353, "dns-a", "dns-b")
	a, b := pods[0], pods[1]
	client := newPod(t, "client", "")
	var deleted atomic.Int64
	proxier := newTestProxier(t, func(c *Config) {
		c.OnSync = func(r SyncResult) { deleted.Add(int64(r.StaleUDPFlowsDeleted)) }
	})
	svc := makeService("dns", "10.96.1.53", udp("dns", 53, 5353))
	mustSync(t, proxier, []*corev1.Service{svc}, makeSlice(svc, "dns-1", podEndpoints(false, a)...))
	conn := client.dialUDP(t, "10.96.1.53:53")
	if reply, err := udpAsk(conn); err != nil || reply != "dns-a:5353" {
		t.Fatalf("first answer %q, error %v", reply, err)
	}

	// dns-a stays up: only deleting the conntrack entry moves the flow to dns-b.
	mustSync(t, proxier, []*corev1.Service{svc}, makeSlice(svc, "dns-1", podEndpoints(false, b)...))
	if deleted.Load() == 0 {
		t.Errorf("no stale conntrack entry was deleted")
	}
	if reply, err := udpAsk(conn); err != nil || reply != "dns-b:5353" {
		t.Errorf("after dns-a left the Service: answer %q, error %v; want dns-b", reply, err)
	}
}

func TestPacketsHairpinPodReachesItselfThroughItsService(t *testing.T) {
	requireDatapath(t)
	pod := tcpPods(t, 8080, "hairpin")[0]
	proxyToPods(t, makeService("self", "10.96.1.60", tcp("", 80, 8080)), "self-1", pod)
	if reply, err := pod.fetch("10.96.1.60:80"); err != nil || reply != "hairpin:8080" {
		t.Errorf("reply %q, error %v", reply, err)
	}
}

func TestPacketsFlowAgainAfterTheTableIsFlushedFromOutside(t *testing.T) {
	requireDatapath(t)
	pod := tcpPods(t, 8080, "backend")[0]
	client := newPod(t, "client", "")
	proxier := proxyToPods(t, makeService("backend-service", "10.96.1.70", tcp("", 80, 8080)), "s1", pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go proxier.Run(ctx)

	for _, outside := range [][]string{
		{"flush", "table", "ip", DefaultTableName},
		{"delete", "table", "ip", DefaultTableName},
	} {
		// Runs in this test's private namespace, never the host's.
		if out, err := exec.Command("nft", outside...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", outside, err, out)
		}
		start := time.Now()
		var lastErr error
		for time.Since(start) < 3*time.Second {
			if _, lastErr = client.fetch("10.96.1.70:80"); lastErr == nil {
				break
			}
		}
		if lastErr != nil {
			t.Fatalf("after nft %v: traffic not restored within 3s: %v", outside, lastErr)
		}
		t.Logf("after nft %s: traffic restored in %v", strings.Join(outside, " "), time.Since(start))
	}
}

func TestPacketsNoFailuresDuring1000EndpointChanges(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "stable", "flappy-1", "flappy-2")
	client := newPod(t, "client", "")
	svc := makeService("backend-service", "10.96.1.80", tcp("", 80, 8080))
	svc.ResourceVersion = "1"
	// IPv4 only: the IPv6 table would double the syncs without testing anything new.
	proxier := newTestProxier(t, func(c *Config) { c.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol} })

	change := func(i int) {
		eps := podEndpoints(false, pods...)
		eps[1].ready, eps[2].ready = i%2 == 0, i%3 == 0 // "stable" stays ready throughout
		slice := makeSlice(svc, "s1", eps...)
		slice.ResourceVersion = fmt.Sprint(i + 1)
		mustSync(t, proxier, []*corev1.Service{svc}, slice)
	}
	// The rules exist before the first request: a SYN sent before any sync is dropped
	// and retried a second later, which would pass as a slow success.
	change(0)

	var requests, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			requests.Add(1)
			if _, err := client.fetch("10.96.1.80:80"); err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
			}
			// A steady client, not a flood: the point is that every connection made
			// while the table changes succeeds.
			time.Sleep(time.Millisecond)
		}
	}()
	// At least 1000 changes, and on until 100 requests have overlapped them: how
	// many fit into 1000 syncs depends on how the CPUs are shared, not on the product.
	changes := 1
	for deadline := time.Now().Add(time.Minute); changes < 1000 || (requests.Load() < 100 && time.Now().Before(deadline)); changes++ {
		change(changes)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests during %d endpoint changes", requests.Load(), changes)
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed; first: %v", failures.Load(), requests.Load(), firstFailure.Load())
	}
	if requests.Load() < 100 {
		t.Errorf("only %d requests ran during the changes", requests.Load())
	}
}

func TestPacketsIPv6ClusterIPToIPv6Pods(t *testing.T) {
	requireDatapath(t)
	pods := tcpPods(t, 8080, "v6-0", "v6-1")
	client := newPod(t, "client", "")
	svc := makeService("backend-v6", "fd00:10:96::10", tcp("", 80, 8080))
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	proxyToPods(t, svc, "v6-1", pods...)
	addr := net.JoinHostPort("fd00:10:96::10", "80")
	counts := countReplies(t, client, addr, 40)
	if len(counts) != 2 {
		t.Errorf("want both IPv6 pods to answer, got %v", counts)
	}
	if reply, err := fetchFromNode(addr); err != nil || !strings.HasPrefix(reply, "v6-") {
		t.Errorf("from the node: reply %q, error %v", reply, err)
	}
}

// TestRenderedRulesetIsAcceptedByNft checks the seed rulesets against the real nft
// parser and kernel, which the Fake cannot judge.
func TestRenderedRulesetIsAcceptedByNft(t *testing.T) {
	requireDatapath(t)
	var services []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for _, seed := range []func() (*corev1.Service, *discoveryv1.EndpointSlice){
		seedBackend, seedMultiPort, seedSticky, seedExternalDatabase, seedNoEndpoints, seedLocalElsewhere, seedTerminating, seedUDP, seedIPv6,
	} {
		svc, slice := seed()
		services, slices = append(services, svc), append(slices, slice)
	}
	proxier := newTestProxier(t, nil)
	mustSync(t, proxier, services, slices...)
	for _, family := range []knftables.Family{knftables.IPv4Family, knftables.IPv6Family} {
		out, err := exec.Command("nft", "list", "table", string(family), DefaultTableName).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list table %s: %v: %s", family, err, out)
		}
		t.Logf("%s", out)
	}
}

// rulesetText is `nft list table` of the IPv4 table in this test's namespace.
func rulesetText(tb testing.TB) string {
	tb.Helper()
	out, err := exec.Command("nft", "list", "table", "ip", DefaultTableName).CombinedOutput()
	if err != nil {
		tb.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}
