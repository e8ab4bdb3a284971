package datapath

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/datapath/nfttrace"
)

// fakeProxier returns an IPv4 Proxier writing to a knftables Fake.
func fakeProxier(t *testing.T, cfg Config) (*Fake, *knftables.Fake, *ConntrackRecorder) {
	t.Helper()
	cfg.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	p, err := NewFake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Table(corev1.IPv4Protocol), p.Conntrack
}

// world is a mutable set of Services and slices with resourceVersions, as a
// reconciler would hand them over.
type world struct {
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
	rv       int
}

func newWorld() *world {
	return &world{services: map[string]*corev1.Service{}, slices: map[string]*discoveryv1.EndpointSlice{}}
}

func (w *world) put(svc *corev1.Service, slice *discoveryv1.EndpointSlice) {
	w.rv++
	svc, slice = svc.DeepCopy(), slice.DeepCopy()
	svc.ResourceVersion, slice.ResourceVersion = strconv.Itoa(w.rv), strconv.Itoa(w.rv)
	w.services[svc.Name], w.slices[svc.Name] = svc, slice
}

func (w *world) remove(name string) { delete(w.services, name); delete(w.slices, name) }

func (w *world) lists() ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	for k, s := range w.services {
		svcs, slices = append(svcs, s), append(slices, w.slices[k])
	}
	return svcs, slices
}

func TestProxierIncrementalSyncsMatchAFullRender(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{"10.244.0.0/16"}, Clock: clock}
	p, fake, _ := fakeProxier(t, cfg)
	w := newWorld()
	backend, backendSlice := seedBackend()
	multi, multiSlice := seedMultiPort()
	stickySvc, stickySlice := seedSticky()
	db, dbSlice := seedExternalDatabase()
	steps := []struct {
		name   string
		change func()
	}{
		{name: "the four seed Services appear", change: func() {
			w.put(backend, backendSlice)
			w.put(multi, multiSlice)
			w.put(stickySvc, stickySlice)
			w.put(db, dbSlice)
		}},
		{name: "a backend pod turns not ready", change: func() {
			s := backendSlice.DeepCopy()
			s.Endpoints[1].Conditions.Ready = knftables.PtrTo(false)
			w.put(backend, s)
		}},
		{name: "a sticky pod goes away", change: func() {
			w.put(stickySvc, makeSlice(stickySvc, "sticky-service-q9d4m", readyEP("10.244.1.30", "node-a")))
		}},
		{name: "backend loses every endpoint", change: func() { w.put(backend, makeSlice(backend, "backend-service-abc12")) }},
		{name: "sticky-service drops affinity", change: func() {
			s := stickySvc.DeepCopy()
			s.Spec.SessionAffinity = corev1.ServiceAffinityNone
			w.put(s, stickySlice)
		}},
		{name: "multi-port-service is deleted", change: func() { w.remove(multi.Name) }},
		{name: "backend comes back with its three pods", change: func() { w.put(backend, backendSlice) }},
	}
	for _, step := range steps {
		step.change()
		svcs, slices := w.lists()
		if err := p.Sync(context.Background(), svcs, slices); err != nil {
			t.Fatalf("%s: sync: %v", step.name, err)
		}
		// A Service that lost endpoints keeps its slot count for paddingHold (see
		// TestFallingEndpointCountKeepsTheDispatchVerdict); then it matches a full render.
		clock.Step(paddingHold)
		if err := p.Maintain(context.Background()); err != nil {
			t.Fatalf("%s: maintain: %v", step.name, err)
		}
		// Fake dumps elements in insertion order, so compare the sorted lines.
		// Leftover endpoint-map elements are deleted after leftoverHold, on purpose.
		want := fakeDump(t, Render(cfg, corev1.IPv4Protocol, svcs, slices))
		got := withoutKeptDNATChains(withoutLeftovers(fake.Dump(), p.families[0].leftovers), want)
		if sortedLines(got) != sortedLines(want) {
			t.Fatalf("%s: table after incremental sync differs from a full render:\n%s\nlast transaction:\n%s", step.name, lineDiff(got, want), fake.LastTransaction)
		}
	}
	if s := p.Stats(); s.FullSyncs != 1 || s.FailedSyncs != 0 {
		t.Errorf("want 1 full sync and partial ones after it, got %+v", s)
	}
}

// TestFallingEndpointCountKeepsTheDispatchVerdict follows a NodePort Service whose
// endpoints go and come back: a removal changes endpoint-map elements only, never a
// dispatch verdict (which would make the kernel validate the whole table), and no new
// connection can reach the removed endpoint; paddingHold later, Maintain moves the
// Service to its own endpoint count.
func TestFallingEndpointCountKeepsTheDispatchVerdict(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	cfg := Config{NodeName: "node-a", NodeIPs: []string{"192.168.0.5"}, Clock: clock}
	p, fake, _ := fakeProxier(t, cfg)
	svc := makeService("web", "10.96.0.10", tcp("", 80, 8080))
	svc.Spec.Type, svc.Spec.Ports[0].NodePort = corev1.ServiceTypeNodePort, 30080
	a, b, c := readyEP("10.244.1.10", "node-a"), readyEP("10.244.2.11", "node-b"), readyEP("10.244.3.12", "node-c")
	rv := 0
	sync := func(eps ...ep) []*discoveryv1.EndpointSlice {
		t.Helper()
		rv++
		slice := makeSlice(svc, "web-1", eps...)
		slice.ResourceVersion = strconv.Itoa(rv)
		if err := p.Sync(context.Background(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
			t.Fatal(err)
		}
		return []*discoveryv1.EndpointSlice{slice}
	}
	tracer := p.Tracer(corev1.IPv4Protocol, "192.168.0.5")
	reaches := func(to nfttrace.Packet, want ...ep) {
		t.Helper()
		outcomes, err := tracer.Trace(to)
		if err != nil {
			t.Fatal(err)
		}
		var wantDNAT []string
		for _, e := range want {
			wantDNAT = append(wantDNAT, e.ip+":8080")
		}
		sort.Strings(wantDNAT)
		if got := nfttrace.Summarize(outcomes).DNAT; !reflect.DeepEqual(got, wantDNAT) {
			t.Errorf("%s reaches %v, want %v", to, got, wantDNAT)
		}
	}
	viaClusterIP := nfttrace.Packet{SourceIP: "10.244.9.2", Protocol: "tcp", DestIP: "10.96.0.10", DestPort: 80}
	viaNodePort := nfttrace.Packet{SourceIP: "203.0.113.7", Protocol: "tcp", DestIP: "192.168.0.5", DestPort: 30080}
	noDispatchChange := func(what string) {
		t.Helper()
		for _, line := range strings.Split(strings.TrimSpace(fake.LastTransaction.String()), "\n") {
			if !strings.Contains(line, " service-endpoints-tcp ") && !strings.Contains(line, " hairpin-endpoints ") {
				t.Errorf("%s: the transaction should change endpoint elements only, has %q", what, line)
			}
		}
	}

	sync(a, b, c)
	sync(a, c)
	noDispatchChange("b goes away")
	if strings.Contains(fake.Dump(), b.ip) {
		t.Errorf("b's map element should be gone at once:\n%s", fake.Dump())
	}
	reaches(viaClusterIP, a, c)
	reaches(viaNodePort, a, c)

	slices := sync(a, b, c)
	noDispatchChange("b comes back")
	reaches(viaClusterIP, a, b, c)
	if got, want := sortedLines(fake.Dump()), sortedLines(fakeDump(t, Render(cfg, corev1.IPv4Protocol, []*corev1.Service{svc}, slices))); got != want {
		t.Errorf("with all three back the table should be a full render's:\n%s", lineDiff(got, want))
	}

	sync(a, c)
	noDispatchChange("b goes away again")
	clock.Step(paddingHold - time.Nanosecond)
	if err := p.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fake.Dump(), "goto dnat-mod-3") {
		t.Errorf("Maintain moved the Service to its new count before paddingHold:\n%s", fake.Dump())
	}
	clock.Step(time.Nanosecond)
	// The padding is due, but only Maintain pays for the verdict change.
	slices = sync(a)
	noDispatchChange("c goes away once the padding is due")
	reaches(viaClusterIP, a)
	reaches(viaNodePort, a)
	if err := p.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := fakeDump(t, Render(cfg, corev1.IPv4Protocol, []*corev1.Service{svc}, slices))
	got := withoutKeptDNATChains(withoutLeftovers(fake.Dump(), p.families[0].leftovers), want)
	if sortedLines(got) != sortedLines(want) {
		t.Errorf("paddingHold after the loss, the table should be a full render's:\n%s", lineDiff(got, want))
	}
	reaches(viaClusterIP, a)
}

func TestProxierEndpointChangeWritesOnlyThatService(t *testing.T) {
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a"})
	svcs, slices := manyServices(100, 10)
	if err := p.Sync(context.Background(), svcs, slices); err != nil {
		t.Fatal(err)
	}
	changed := slices[42].DeepCopy()
	changed.ResourceVersion = "2"
	changed.Endpoints[3].Conditions.Ready = knftables.PtrTo(false)
	slices[42] = changed
	if err := p.Sync(context.Background(), svcs, slices); err != nil {
		t.Fatal(err)
	}
	tx := fake.LastTransaction.String()
	for _, line := range strings.Split(strings.TrimSpace(tx), "\n") {
		if !strings.Contains(line, svcs[42].Spec.ClusterIP+" ") && !strings.Contains(line, DNATChainName(9)) {
			t.Errorf("operation outside the changed Service: %q", line)
		}
	}
	// 10 -> 9 endpoints: the dispatch verdict changes and the last index disappears, and
	// indices 3..8 shift; nothing is written for the other 99 Services.
	if n := fake.LastTransaction.NumOperations(); n > 20 {
		t.Errorf("want at most 20 operations, got %d:\n%s", n, tx)
	}
}

func TestProxierFailedSyncKeepsLastGoodRulesetAndRetriesInFull(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(p *Fake, err error) (restore func())
	}{
		{"nft transaction", func(p *Fake, err error) func() {
			p.FailTransactions(err)
			return func() { p.FailTransactions(nil) }
		}},
		// Deleting the Service only deletes elements: one element batch, which fails.
		{"element batch", func(p *Fake, err error) func() {
			w := failElements(p, err)
			return func() { w.failure = nil }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var results []SyncResult
			p, fake, _ := fakeProxier(t, Config{OnSync: func(r SyncResult) { results = append(results, r) }})
			svc, slice := seedBackend()
			ctx := context.Background()
			if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
				t.Fatal(err)
			}
			good := fake.Dump()
			restore := tc.fail(p, errors.New("transaction rejected"))
			err := p.Sync(ctx, nil, nil)
			if err == nil || !strings.Contains(err.Error(), "transaction rejected") {
				t.Fatalf("want the error back, got %v", err)
			}
			if fake.Dump() != good {
				t.Errorf("a failed sync changed the table")
			}
			if s := p.Stats(); s.ConsecutiveFailures != 1 || s.FailedSyncs != 1 || s.LastError == nil {
				t.Errorf("stats do not show the failure: %+v", s)
			}
			restore()
			if err := p.Sync(ctx, nil, nil); err != nil {
				t.Fatal(err)
			}
			if last := results[len(results)-1]; !last.Full || last.Reason != "previous-failure" {
				t.Errorf("want a full sync after a failure, got %+v", last)
			}
			if strings.Contains(fake.Dump(), "10.96.0.10") {
				t.Errorf("the retry did not remove the deleted Service")
			}
		})
	}
}

func TestProxierRestoresAFlushedTable(t *testing.T) {
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a"})
	svc, slice := seedBackend()
	ctx := context.Background()
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	want := fake.Dump()
	tx := fake.NewTransaction()
	tx.Flush(&knftables.Table{})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(); got != want {
		t.Errorf("table not restored\n--- got ---\n%s\n--- want ---\n%s", got, want)
	}
}

// moveUDPEndpoint syncs the seed UDP Service, calls between, then moves its endpoint from
// 10.244.2.53 to 10.244.2.54 and returns the second sync's error.
func moveUDPEndpoint(t *testing.T, p *Fake, between func()) error {
	t.Helper()
	w := newWorld()
	svc, slice := seedUDP()
	w.put(svc, slice)
	svcs, slices := w.lists()
	if err := p.Sync(context.Background(), svcs, slices); err != nil {
		t.Fatal(err)
	}
	between()
	w.put(svc, makeSlice(svc, "dns-1", readyEP("10.244.2.54", "node-b")))
	svcs, slices = w.lists()
	return p.Sync(context.Background(), svcs, slices)
}

func udpFlowTo(endpointIP string) UDPFlow {
	return UDPFlow{OrigDstIP: "10.96.0.53", OrigDstPort: 53, ReplySrcIP: endpointIP, ReplySrcPort: 5353}
}

func TestProxierDeletesStaleUDPConntrackEntries(t *testing.T) {
	p, _, ct := fakeProxier(t, Config{NodeName: "node-a"})
	other := UDPFlow{OrigDstIP: "10.96.0.99", OrigDstPort: 53, ReplySrcIP: "10.244.2.53", ReplySrcPort: 5353}
	if err := moveUDPEndpoint(t, p, func() { ct.AddFlows(udpFlowTo("10.244.2.53"), other) }); err != nil {
		t.Fatal(err)
	}
	if deleted := ct.Deleted(); !reflect.DeepEqual(deleted, []UDPFlow{udpFlowTo("10.244.2.53")}) {
		t.Errorf("deleted %v, want only the flow to the endpoint that left", deleted)
	}
}

func TestProxierUDPConntrackAfterRestartAndWhileDraining(t *testing.T) {
	svc, _ := seedUDP()
	draining := ep{ip: "10.244.2.60", node: "node-b", serving: true, terminating: true}
	gone := ep{ip: "10.244.2.61", node: "node-b", serving: false, terminating: true}
	// A fresh Proxier (an agent just restarted) with flows from before the restart.
	p, _, ct := fakeProxier(t, Config{NodeName: "node-a"})
	ct.AddFlows(udpFlowTo("10.244.2.53"), udpFlowTo("10.244.2.60"), udpFlowTo("10.244.2.61"), udpFlowTo("10.244.2.99"))
	slice := makeSlice(svc, "dns-1", readyEP("10.244.2.53", "node-b"), draining, gone)
	if err := p.Sync(context.Background(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	want := []UDPFlow{udpFlowTo("10.244.2.61"), udpFlowTo("10.244.2.99")}
	if deleted := ct.Deleted(); !reflect.DeepEqual(deleted, want) {
		t.Errorf("first sync deleted %v, want %v (the serving terminating endpoint keeps its flow)", deleted, want)
	}
}

func TestProxierConntrackFailureIsReportedButNotASyncFailure(t *testing.T) {
	var results []SyncResult
	p, fake, ct := fakeProxier(t, Config{NodeName: "node-a", OnSync: func(r SyncResult) { results = append(results, r) }})
	err := moveUDPEndpoint(t, p, func() { ct.Fail(errors.New("netlink: operation not permitted")) })
	if err != nil {
		t.Fatalf("sync failed over conntrack: %v", err)
	}
	last := results[len(results)-1]
	if last.Err != nil || last.ConntrackErr == nil || !strings.Contains(last.ConntrackErr.Error(), "operation not permitted") {
		t.Errorf("want the conntrack error apart from the sync's: %+v", last)
	}
	if s := p.Stats(); s.ConsecutiveFailures != 0 {
		t.Errorf("stats count a failure: %+v", s)
	}
	if dump := fake.Dump(); !strings.Contains(dump, "10.244.2.54") || strings.Contains(dump, "10.244.2.53") {
		t.Errorf("the table must hold the new endpoint although conntrack cleanup failed:\n%s", dump)
	}
}

// lineDiff lists the lines only in got (+) and only in want (-).
func lineDiff(got, want string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var out []string
	for l := range g {
		if !w[l] {
			out = append(out, "+ "+l)
		}
	}
	for l := range w {
		if !g[l] {
			out = append(out, "- "+l)
		}
	}
	return strings.Join(out, "\n")
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// withoutLeftovers drops from a Fake dump the lines of leftover elements.
func withoutLeftovers(dump string, leftovers []heldElement) string {
	skip := map[string]bool{}
	for _, e := range leftovers {
		skip[e.Set+" { "+strings.Join(e.Key, " . ")+" :"] = true
	}
	var out []string
	for _, line := range strings.Split(dump, "\n") {
		keep := true
		for prefix := range skip {
			if strings.Contains(line, " "+prefix) {
				keep = false
			}
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestMaintainDeletesLeftoverEndpointElements(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a", Clock: clock})
	svc := makeService("backend-service", "10.96.0.10", tcp("", 80, 8080))
	ctx := context.Background()
	two := makeSlice(svc, "backend-1", readyEP("10.244.1.10", "node-a"), readyEP("10.244.1.11", "node-a"))
	two.ResourceVersion = "1"
	one := makeSlice(svc, "backend-1", readyEP("10.244.1.10", "node-a"))
	one.ResourceVersion = "2"
	for _, slice := range []*discoveryv1.EndpointSlice{two, one} {
		if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
			t.Fatal(err)
		}
	}
	// The Service keeps two slots, both 10.244.1.10, for paddingHold; then it goes to one,
	// and slot 1 stays behind for lookups in flight.
	slot1 := "10.96.0.10 . 80 . 1 : "
	clock.Step(paddingHold)
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); !strings.Contains(dump, "goto dnat-mod-1") || !strings.Contains(dump, slot1) {
		t.Fatalf("after paddingHold the dispatch should go to one slot, and slot 1 should outlive its removal by leftoverHold, for lookups in flight:\n%s", dump)
	}
	clock.Step(leftoverHold - time.Nanosecond)
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fake.Dump(), slot1) {
		t.Fatal("Maintain deleted the removed slot's map element before leftoverHold was over")
	}
	clock.Step(time.Nanosecond)
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); strings.Contains(dump, slot1) {
		t.Errorf("Maintain left the removed slot's map element:\n%s", dump)
	}
}

func TestProxierSetZoneRendersHintedServicesAgain(t *testing.T) {
	var results []SyncResult
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a", Zone: "zone-a", OnSync: func(r SyncResult) { results = append(results, r) }})
	zonal := makeService("zonal", "10.96.3.1", tcp("", 80, 8080))
	zonal.ResourceVersion = "1"
	zonalSlice := makeSlice(zonal, "zonal-1", zoneHinted("10.244.7.1", "node-a", "zone-a"), zoneHinted("10.244.8.1", "node-b", "zone-b"))
	zonalSlice.ResourceVersion = "1"
	plain, plainSlice := seedBackend()
	plain.ResourceVersion, plainSlice.ResourceVersion = "1", "1"
	services, slices := []*corev1.Service{zonal, plain}, []*discoveryv1.EndpointSlice{zonalSlice, plainSlice}
	if err := p.Sync(context.Background(), services, slices); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); !strings.Contains(dump, "10.244.7.1") || strings.Contains(dump, "10.244.8.1") {
		t.Fatalf("zone-a node: want only the zone-a endpoint in the table:\n%s", dump)
	}
	if last := results[len(results)-1]; last.ServicesUsingHints != 1 || last.ServicesIgnoringHints != 0 {
		t.Errorf("zone-a: hints used by %d, ignored by %d Services; want 1, 0", last.ServicesUsingHints, last.ServicesIgnoringHints)
	}

	if !p.SetZone("zone-b") || p.SetZone("zone-b") {
		t.Fatal("SetZone must report a change once")
	}
	if err := p.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); strings.Contains(dump, "10.244.7.1") || !strings.Contains(dump, "10.244.8.1") {
		t.Fatalf("after moving to zone-b: want only the zone-b endpoint in the table:\n%s", dump)
	}

	if !p.SetZone("zone-c") {
		t.Fatal("SetZone zone-c: no change reported")
	}
	if err := p.Apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); !strings.Contains(dump, "10.244.7.1") || !strings.Contains(dump, "10.244.8.1") {
		t.Fatalf("zone-c has no endpoint: want both endpoints in the table:\n%s", dump)
	}
	if last := results[len(results)-1]; last.ServicesUsingHints != 0 || last.ServicesIgnoringHints != 1 {
		t.Errorf("zone-c: hints used by %d, ignored by %d Services; want 0, 1", last.ServicesUsingHints, last.ServicesIgnoringHints)
	}
}

// withoutKeptDNATChains drops the dnat-mod-N chains (and their rules) that want lacks:
// incremental syncs keep them until the next full sync, on purpose (see removeStale).
func withoutKeptDNATChains(dump, want string) string {
	var out []string
	for _, line := range strings.Split(dump, "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && (fields[1] == "chain" || fields[1] == "rule") && isSharedChain(fields[4]) &&
			!strings.Contains(want, "add chain ip kube-clusterip "+fields[4]+"\n") {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func TestProxierRunMaintainsOnEveryTickOfItsClock(t *testing.T) {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(10 * time.Second) // a loaded machine may be slow to schedule Run
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a", Clock: clock, CanaryCheckPeriod: time.Second})
	svc, slice := seedBackend()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	want := fake.Dump()
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	tx := fake.NewTransaction()
	tx.Flush(&knftables.Table{})
	if err := fake.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	g.Eventually(clock.HasWaiters).Should(BeTrue(), "Run starts its ticker")
	if fake.Dump() == want {
		t.Fatal("the flush did not change the table")
	}
	clock.Step(time.Second)
	g.Eventually(fake.Dump).Should(Equal(want), "the tick restores the flushed table")
}

func TestProxierResyncsInFullOncePerFullSyncPeriod(t *testing.T) {
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	var results []SyncResult
	p, _, _ := fakeProxier(t, Config{NodeName: "node-a", Clock: clock, FullSyncPeriod: time.Hour,
		OnSync: func(r SyncResult) { results = append(results, r) }})
	svc, slice := seedBackend()
	ctx := context.Background()
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	clock.Step(time.Hour - time.Nanosecond)
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 {
		t.Fatalf("Maintain synced before the period was over: %+v", results[1:])
	}
	clock.Step(time.Nanosecond)
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || !results[1].Full || results[1].Reason != "period" {
		t.Errorf("want one full sync for the period, got %+v", results[1:])
	}
}

// An endpoint count that flips back and forth (a pod turning NotReady and Ready again) changes
// map elements only, once each dnat-mod-N chain exists: the chains of counts no Service uses
// stay until the next full sync, so the partial syncs need no nft run (in the kernel, a
// netlink element batch).
func TestEndpointCountFlipsChangeElementsOnly(t *testing.T) {
	p, nft, _ := fakeProxier(t, Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4}})
	svc := makeService("probe", "10.96.0.20", tcp("", 80, 8080))
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	both := makeSlice(svc, "probe-1", readyEP("10.244.1.10", "node-a"), readyEP("10.244.1.11", "node-a"))
	one := makeSlice(svc, "probe-1", readyEP("10.244.1.10", "node-a"), ep{ip: "10.244.1.11", node: "node-a"})
	ctx := context.Background()
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{both}); err != nil {
		t.Fatal(err)
	}
	for i, slice := range []*discoveryv1.EndpointSlice{one, both, one, both} {
		p.Update(key, svc, []*discoveryv1.EndpointSlice{slice})
		if err := p.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			continue // the first flip to one endpoint adds dnat-mod-1
		}
		if tx := nft.LastTransaction.String(); strings.Contains(tx, " chain ") || strings.Contains(tx, " rule ") {
			t.Fatalf("flip %d changed chains or rules:\n%s", i+1, tx)
		}
	}
	if s := p.Stats(); s.FullSyncs != 1 {
		t.Fatalf("want one full sync, then partial ones: %+v", s)
	}
}

func TestUpdateTellsWhetherTheRecordChanged(t *testing.T) {
	p, _, _ := fakeProxier(t, Config{NodeName: "node-a"})
	svcs, slices := manyServices(1, 2)
	svc, slice := svcs[0], slices[0]
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	newer := slice.DeepCopy()
	newer.ResourceVersion += "-2"
	steps := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   bool
	}{
		{"a new Service", svc, []*discoveryv1.EndpointSlice{slice}, true},
		{"the same objects again (a cache's replay)", svc, []*discoveryv1.EndpointSlice{slice}, false},
		{"a newer slice", svc, []*discoveryv1.EndpointSlice{newer}, true},
		{"a slice less", svc, nil, true},
		{"gone", nil, nil, true},
		{"gone again", nil, nil, false},
	}
	for _, step := range steps {
		if got := p.Update(key, step.svc, step.slices); got != step.want {
			t.Errorf("%s: Update = %v, want %v", step.name, got, step.want)
		}
	}
}
