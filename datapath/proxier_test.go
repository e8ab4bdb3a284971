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

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// fakeProxier returns an IPv4 Proxier writing to a knftables Fake.
func fakeProxier(t *testing.T, cfg Config) (*Proxier, *knftables.Fake, *recordingConntrack) {
	t.Helper()
	fake := knftables.NewFake(knftables.IPv4Family, DefaultTableName)
	ct := &recordingConntrack{}
	cfg.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	cfg.NewInterface = func(knftables.Family, string) (knftables.Interface, error) { return fake, nil }
	cfg.CanaryPresent = func(context.Context, knftables.Family, string) (bool, error) {
		fake.RLock()
		defer fake.RUnlock()
		return fake.Table != nil && fake.Table.Chains[canaryChain] != nil && len(fake.Table.Chains[canaryChain].Rules) > 0, nil
	}
	cfg.Conntrack = ct
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, fake, ct
}

// recordingConntrack is a conntrack table of UDP flows; it records what it deletes, or
// fails when err is set.
type recordingConntrack struct {
	flows, deleted []UDPFlow
	err            error
}

func (r *recordingConntrack) DeleteStaleUDPFlows(_ corev1.IPFamily, frontends UDPFrontends) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	var kept []UDPFlow
	for _, f := range r.flows {
		if frontends.StaleFlow(f) {
			r.deleted = append(r.deleted, f)
		} else {
			kept = append(kept, f)
		}
	}
	n := len(r.flows) - len(kept)
	r.flows = kept
	return n, nil
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
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{"10.244.0.0/16"}}
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
		// Fake dumps elements in insertion order, so compare the sorted lines.
		// Leftover endpoint-map elements are deleted after leftoverHold, on purpose.
		want := fakeDump(t, Render(cfg, corev1.IPv4Protocol, svcs, slices))
		got := withoutKeptDNATChains(withoutLeftovers(fake.Dump(), p.families[0].leftovers), want)
		if sortedLines(got) != sortedLines(want) {
			t.Fatalf("%s: table after incremental sync differs from a full render:\n%s\nlast transaction:\n%s", step.name, lineDiff(got, want), fake.LastTransaction)
		}
	}
	if s := p.Stats(); s.FullSyncs != 1 || s.PartialSyncs != uint64(len(steps)-1) {
		t.Errorf("want 1 full and %d partial syncs, got %+v", len(steps)-1, s)
	}
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
		if !strings.Contains(line, "10.96.0.42 ") && !strings.Contains(line, DNATChainName(9)) {
			t.Errorf("operation outside the changed Service: %q", line)
		}
	}
	// 10 -> 9 endpoints: the dispatch verdict changes and the last index disappears, and
	// indices 3..8 shift; nothing is written for the other 99 Services.
	if n := fake.LastTransaction.NumOperations(); n > 20 {
		t.Errorf("want at most 20 operations, got %d:\n%s", n, tx)
	}
}

// failingNFT fails every transaction while fail is set.
type failingNFT struct {
	knftables.Interface
	fail bool
}

func (f *failingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	if f.fail {
		return errors.New("transaction rejected")
	}
	return f.Interface.Run(ctx, tx)
}

func TestProxierFailedSyncKeepsLastGoodRulesetAndRetriesInFull(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, DefaultTableName)
	nft := &failingNFT{Interface: fake}
	var results []SyncResult
	p, err := New(Config{IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		NewInterface:  func(knftables.Family, string) (knftables.Interface, error) { return nft, nil },
		CanaryPresent: func(context.Context, knftables.Family, string) (bool, error) { return true, nil },
		Conntrack:     &recordingConntrack{},
		OnSync:        func(r SyncResult) { results = append(results, r) }})
	if err != nil {
		t.Fatal(err)
	}
	svc, slice := seedBackend()
	ctx := context.Background()
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	good := fake.Dump()
	nft.fail = true
	err = p.Sync(ctx, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "transaction rejected") {
		t.Fatalf("want the nft error back, got %v", err)
	}
	if fake.Dump() != good {
		t.Errorf("a failed sync changed the table")
	}
	if s := p.Stats(); s.ConsecutiveFailures != 1 || s.FailedSyncs != 1 || s.LastError == nil {
		t.Errorf("stats do not show the failure: %+v", s)
	}
	nft.fail = false
	if err := p.Sync(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if last := results[len(results)-1]; !last.Full || last.Reason != "previous-failure" {
		t.Errorf("want a full sync after a failure, got %+v", last)
	}
	if strings.Contains(fake.Dump(), "10.96.0.10") {
		t.Errorf("the retry did not remove the deleted Service")
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

func TestProxierDeletesStaleUDPConntrackEntries(t *testing.T) {
	p, _, ct := fakeProxier(t, Config{NodeName: "node-a"})
	w := newWorld()
	svc, slice := seedUDP()
	w.put(svc, slice)
	ctx := context.Background()
	sync := func() {
		t.Helper()
		svcs, slices := w.lists()
		if err := p.Sync(ctx, svcs, slices); err != nil {
			t.Fatal(err)
		}
	}
	old := UDPFlow{OrigDstIP: "10.96.0.53", OrigDstPort: 53, ReplySrcIP: "10.244.2.53", ReplySrcPort: 5353}
	other := UDPFlow{OrigDstIP: "10.96.0.99", OrigDstPort: 53, ReplySrcIP: "10.244.2.53", ReplySrcPort: 5353}
	sync()
	ct.flows = []UDPFlow{old, other}
	w.put(svc, makeSlice(svc, "dns-1", readyEP("10.244.2.54", "node-b")))
	sync()
	if len(ct.deleted) != 1 || ct.deleted[0] != old {
		t.Errorf("deleted %v, want only %v", ct.deleted, old)
	}
}

func TestProxierUDPConntrackAfterRestartAndWhileDraining(t *testing.T) {
	svc, _ := seedUDP()
	flow := func(ip string) UDPFlow {
		return UDPFlow{OrigDstIP: "10.96.0.53", OrigDstPort: 53, ReplySrcIP: ip, ReplySrcPort: 5353}
	}
	draining := ep{ip: "10.244.2.60", node: "node-b", serving: true, terminating: true}
	gone := ep{ip: "10.244.2.61", node: "node-b", serving: false, terminating: true}
	// A fresh Proxier (an agent just restarted) with flows from before the restart.
	p, _, ct := fakeProxier(t, Config{NodeName: "node-a"})
	ct.flows = []UDPFlow{flow("10.244.2.53"), flow("10.244.2.60"), flow("10.244.2.61"), flow("10.244.2.99")}
	slice := makeSlice(svc, "dns-1", readyEP("10.244.2.53", "node-b"), draining, gone)
	if err := p.Sync(context.Background(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	want := []UDPFlow{flow("10.244.2.61"), flow("10.244.2.99")}
	if !reflect.DeepEqual(ct.deleted, want) {
		t.Errorf("first sync deleted %v, want %v (the serving terminating endpoint keeps its flow)", ct.deleted, want)
	}
}

func TestProxierConntrackFailureIsNotASyncFailure(t *testing.T) {
	var results []SyncResult
	p, _, ct := fakeProxier(t, Config{NodeName: "node-a", OnSync: func(r SyncResult) { results = append(results, r) }})
	ct.err = errors.New("conntrack: permission denied")
	svc, slice := seedUDP()
	if err := p.Sync(context.Background(), []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatalf("sync failed over conntrack: %v", err)
	}
	if last := results[len(results)-1]; last.Err != nil || last.ConntrackErr == nil {
		t.Errorf("want the conntrack error apart from the sync's: %+v", last)
	}
	if s := p.Stats(); s.ConsecutiveFailures != 0 {
		t.Errorf("stats count a failure: %+v", s)
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
	defer func(hold time.Duration) { leftoverHold = hold }(leftoverHold)
	leftoverHold = 50 * time.Millisecond
	p, fake, _ := fakeProxier(t, Config{NodeName: "node-a"})
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
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fake.Dump(), "10.244.1.11") {
		t.Fatal("the removed endpoint's map element should outlive its removal by leftoverHold, for lookups in flight")
	}
	time.Sleep(leftoverHold) // the hold is a duration by design; nothing else to wait on
	if err := p.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := fake.Dump(); strings.Contains(dump, "10.244.1.11") {
		t.Errorf("Maintain left the removed endpoint's map element:\n%s", dump)
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
