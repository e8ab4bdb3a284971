package datapath

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/knftables"
)

// ipv4Only restricts a benchmark's Proxier to the IPv4 table (the fixtures are IPv4).
func ipv4Only(c *Config) { c.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol} }

// BenchmarkRender measures the pure renderer alone (no nft, no root needed), for 10k
// Services x 10 endpoints of each of benchServiceTypes.
func BenchmarkRender(b *testing.B) {
	for _, kind := range benchServiceTypes {
		b.Run("type="+string(kind), func(b *testing.B) {
			services, slices := manyServicesOfType(kind, 10000, 10)
			cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4}}
			for b.Loop() {
				Render(cfg, corev1.IPv4Protocol, services, slices)
			}
		})
	}
}

// BenchmarkEncodeElements measures the encoding of a full sync's element batch for 10k
// Services x 10 endpoints (no kernel, no root needed).
func BenchmarkEncodeElements(b *testing.B) {
	services, slices := manyServices(10000, 10)
	want := Render(Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4}}, corev1.IPv4Protocol, services, slices)
	ops := &opLog{}
	decls := planFullSteps(fullSteps{prepare: &opLog{}, fill: ops, swap: ops, commit: &opLog{}}, want, existingObjects{})
	w := newNetlinkElements(knftables.IPv4Family, DefaultTableName, nil)
	for b.Loop() {
		if _, err := w.encode(ops.ops, decls); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullSync measures the first sync of an empty node: render, plan, nft for the
// chains, netlink for the elements, for ClusterIP and for NodePort Services (half of them
// externalTrafficPolicy Local). Targets: 10k Services x 10 endpoints <= 3 s (kube-proxy v1.37.2: 14.95 s; 1k: 0.71 s).
func BenchmarkFullSync(b *testing.B) {
	forEachFullSyncCase(b, func(b *testing.B, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) {
		var cpuTotal, nftTotal time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			p := newTestProxier(b, ipv4Only)
			nftBefore, cpu := cpuOf(syscall.RUSAGE_CHILDREN), startCPUClock()
			b.StartTimer()
			if err := p.Sync(context.Background(), services, slices); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpuTotal += cpuUsed() - cpu.start
			nftTotal += cpuOf(syscall.RUSAGE_CHILDREN) - nftBefore
			if i == b.N-1 {
				if len(services) <= 10000 { // nft takes minutes to list 100k Services
					b.ReportMetric(float64(rulesetLines(b)), "ruleset-lines")
				}
				b.ReportMetric(float64(cpuTotal.Milliseconds())/float64(b.N), "cpu-ms/op")
				b.ReportMetric(float64(nftTotal.Milliseconds())/float64(b.N), "nft-cpu-ms/op")
				reportPeakRSS(b)
			}
			if err := p.Cleanup(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}

// forEachFullSyncCase runs bench as sub-benchmarks over the full sync cases: benchSizes
// Services of 10 endpoints, of each of benchServiceTypes (NodePort only up to 10k).
func forEachFullSyncCase(b *testing.B, bench func(b *testing.B, services []*corev1.Service, slices []*discoveryv1.EndpointSlice)) {
	requireDatapath(b)
	for _, n := range benchSizes() {
		for _, kind := range benchServiceTypes {
			if n > 10000 && kind == corev1.ServiceTypeNodePort {
				continue // NodePorts 20000+i run out at 45k
			}
			b.Run(fmt.Sprintf("services=%d/type=%s", n, kind), func(b *testing.B) {
				services, slices := manyServicesOfType(kind, n, 10)
				bench(b, services, slices)
			})
		}
	}
}

// BenchmarkEndpointChange measures one endpoint's readiness flip at scale: a partial
// sync. Target at 10k Services <= 50 ms (kube-proxy v1.37.2: 418 ms; 1k: 58 ms).
// api=update is the event-driven path (Update + Apply); api=sync hands over the full
// lists each time. Each flip takes an endpoint from a Service, which keeps its slot count
// (padSlots); rebalance-ms is the later Maintain that moves all of them to their own
// counts in one commit, off the flips' path (the chain for their new count exists, as
// once a cluster has seen that count; a count never seen adds its chain through nft).
func BenchmarkEndpointChange(b *testing.B) {
	requireDatapath(b)
	for _, n := range benchSizes() {
		for _, kind := range benchServiceTypes {
			if n > 10000 && kind == corev1.ServiceTypeNodePort {
				continue // NodePorts 20000+i run out at 45k
			}
			for _, api := range []string{"update", "sync"} {
				b.Run(fmt.Sprintf("services=%d/type=%s/api=%s", n, kind, api), func(b *testing.B) {
					services, slices := manyServicesOfType(kind, n, 10)
					clock := clocktesting.NewFakeClock(time.Now())
					p := newTestProxier(b, func(cfg *Config) { ipv4Only(cfg); cfg.Clock = clock })
					ctx := context.Background()
					if err := p.Sync(ctx, services, slices); err != nil {
						b.Fatal(err)
					}
					// One Service goes to 9 endpoints and back to its own count first, so that
					// the chain for 9 exists, as it does once a cluster has seen that count.
					warm := n / 3
					slices[warm] = flipFirstEndpoint(slices[warm], -1)
					if err := p.Sync(ctx, services, slices); err != nil {
						b.Fatal(err)
					}
					rebalance := func() time.Duration {
						clock.Step(paddingHold)
						start := time.Now()
						if err := p.Maintain(ctx); err != nil {
							b.Fatal(err)
						}
						return time.Since(start)
					}
					rebalance()
					// Collect the setup's garbage (gigabytes at 100k) first, so that cpu-ms/op
					// counts the changes, not a collection the full sync left running.
					runtime.GC()
					cpu := startCPUClock()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						k := (i * 7919) % n // a different Service each time
						slices[k] = flipFirstEndpoint(slices[k], i)
						b.StartTimer()
						var err error
						if api == "update" {
							p.Update(types.NamespacedName{Namespace: services[k].Namespace, Name: services[k].Name}, services[k], slices[k:k+1])
							err = p.Apply(ctx)
						} else {
							err = p.Sync(ctx, services, slices)
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					cpu.report(b)
					b.ReportMetric(float64(rebalance().Microseconds())/1000, "rebalance-ms")
					reportPeakRSS(b)
					if s := p.Stats(); s.FullSyncs != 1 {
						b.Errorf("want only partial syncs after the first, got %+v", s)
					}
				})
			}
		}
	}
}

// benchSizes are the Service counts of the full sync and endpoint change benchmarks;
// KUBE_CLUSTERIP_BENCH_100K=1 adds 100k (minutes, and about a GiB of memory).
func benchSizes() []int {
	if os.Getenv("KUBE_CLUSTERIP_BENCH_100K") == "1" {
		return []int{1000, 10000, 100000}
	}
	return []int{1000, 10000}
}

// reportPeakRSS reports the test process's peak resident memory (VmHWM): an upper bound
// for the Proxier's, since the fixtures live in the same process.
func reportPeakRSS(b *testing.B) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmHWM:" {
			if kib, err := strconv.Atoi(fields[1]); err == nil {
				b.ReportMetric(float64(kib)/1024, "peak-rss-MiB")
			}
		}
	}
}

// cpuClock measures CPU time of this process and its children (nft), which stays
// meaningful when other work on the machine stretches wall-clock time.
type cpuClock struct{ start time.Duration }

func startCPUClock() cpuClock { return cpuClock{start: cpuUsed()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64((cpuUsed()-c.start).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuUsed is the CPU time of this process plus that of its waited-for children.
func cpuUsed() time.Duration { return cpuOf(syscall.RUSAGE_SELF) + cpuOf(syscall.RUSAGE_CHILDREN) }

func cpuOf(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// flipFirstEndpoint returns a new version of the slice with its first endpoint's
// readiness toggled.
func flipFirstEndpoint(s *discoveryv1.EndpointSlice, version int) *discoveryv1.EndpointSlice {
	s = s.DeepCopy()
	s.ResourceVersion = fmt.Sprintf("%s-%d", s.ResourceVersion, version)
	ready := s.Endpoints[0].Conditions.Ready
	s.Endpoints[0].Conditions.Ready = knftables.PtrTo(ready != nil && !*ready)
	return s
}

// rulesetLines counts the lines of `nft list table` (the private namespace's table).
func rulesetLines(tb testing.TB) int {
	return strings.Count(rulesetText(tb), "\n")
}

// BenchmarkConnectionRate compares new TCP connections per second through a ClusterIP
// with connections straight to the pod, with 10 and with 10k Services programmed, and
// with connections through a second ClusterIP that a single DNAT rule serves ahead of
// ours: what the kernel's NAT alone costs. Target: ratio >= 0.97.
func BenchmarkConnectionRate(b *testing.B) {
	requireDatapath(b)
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			w := newConnectionRateWorkload(b, n)
			p := newTestProxier(b, ipv4Only)
			if err := p.Sync(context.Background(), w.services, w.slices); err != nil {
				b.Fatal(err)
			}
			w.measure(b)
		})
	}
}

// connectionRateWorkload is BenchmarkConnectionRate's node: n Services, the last of which
// (connRateClusterIP) has one pod, a client pod, and the one-rule NAT floor for that pod.
type connectionRateWorkload struct {
	server, client  *testPod
	services        []*corev1.Service
	slices          []*discoveryv1.EndpointSlice
	natFloorAddress string
}

const (
	connRateClusterIP = "10.100.0.1"
	// connRateNATFloorIP is DNATed by a table of its own, at a priority before any proxy's.
	connRateNATFloorIP    = "10.100.0.2"
	connRateNATFloorTable = "connection-rate-nat-floor"
)

func newConnectionRateWorkload(b *testing.B, n int) *connectionRateWorkload {
	w := &connectionRateWorkload{server: newPod(b, "server", ""), client: newPod(b, "client", "")}
	w.server.serveTCP(b, 8080)
	w.services, w.slices = manyServices(n-1, 10)
	svc := makeService("target", connRateClusterIP, tcp("", 80, 8080))
	w.services = append(w.services, svc)
	w.slices = append(w.slices, makeSlice(svc, "target-1", podEndpoints(false, w.server)...))
	floor := fmt.Sprintf(`table ip %[1]s {
	chain prerouting {
		type nat hook prerouting priority dstnat - 1;
		ip daddr %[2]s tcp dport 80 dnat to %[3]s:8080
	}
}
`, connRateNATFloorTable, connRateNATFloorIP, w.server.ip)
	// Only this benchmark's private namespace has the table (requireDatapath).
	if err := nftScript("nft", floor); err != nil {
		b.Fatalf("add the NAT floor's table: %v", err)
	}
	b.Cleanup(func() {
		if err := nftScript("nft", "delete table ip "+connRateNATFloorTable); err != nil {
			b.Errorf("delete the NAT floor's table: %v", err)
		}
	})
	w.natFloorAddress = connRateNATFloorIP + ":80"
	return w
}

// measure reports the connection rates through the ClusterIP, through the NAT floor and
// straight to the pod, and the first two as ratios of the last.
func (w *connectionRateWorkload) measure(b *testing.B) {
	rates := connectionRates(b, w.client, connRateClusterIP+":80", w.natFloorAddress, w.server.ip+":8080")
	viaService, natFloor, direct := rates[0], rates[1], rates[2]
	b.ReportMetric(viaService, "clusterip-conn/s")
	b.ReportMetric(natFloor, "natfloor-conn/s")
	b.ReportMetric(direct, "direct-conn/s")
	b.ReportMetric(viaService/direct, "ratio")
	b.ReportMetric(natFloor/direct, "natfloor-ratio")
}

// connectionRates opens connections to each address in turn (b.N each, at least 5000: runs of
// 2000 swung by ±3% on a quiet machine), starting each round with the next address, so that
// load from elsewhere on the machine and what one connection leaves behind hit all alike; it
// returns connections per second for each address.
func connectionRates(b *testing.B, client *testPod, addrs ...string) []float64 {
	n := max(b.N, 5000)
	spent := make([]time.Duration, len(addrs))
	for i := 0; i < n; i++ {
		for k := range addrs {
			j := (i + k) % len(addrs)
			start := time.Now()
			if _, err := client.fetch(addrs[j]); err != nil {
				b.Fatalf("connection %d to %s: %v", i, addrs[j], err)
			}
			spent[j] += time.Since(start)
		}
	}
	rates := make([]float64, len(addrs))
	for j := range addrs {
		rates[j] = float64(n) / spent[j].Seconds()
	}
	return rates
}

// BenchmarkFullSyncFloor puts the first full sync of an empty node (render, plan, nft
// for the chains, netlink for the elements) beside the kernel floor for the same table,
// alternating the two in each iteration so that load from elsewhere hits both alike.
// The floor is what is left with the Go work done beforehand: the chains and rules
// through nft (a few hundred lines of text, whatever the Service count) and the
// elements, which are the bulk, as one netlink batch encoded in advance: the kernel's
// commit of it, and the socket.
//
// Metrics: ours-ms and floor-ms per full sync, floor-elements-ms (the netlink batch
// alone) and ours/floor; the same in CPU time.
func BenchmarkFullSyncFloor(b *testing.B) {
	forEachFullSyncCase(b, func(b *testing.B, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) {
		ctx := context.Background()
		var ours, floor, floorElements, oursCPU, floorCPU time.Duration
		for i := 0; i < b.N; i++ {
			p := newTestProxier(b, ipv4Only)
			start, cpu := time.Now(), cpuUsed()
			if err := p.Sync(ctx, services, slices); err != nil {
				b.Fatal(err)
			}
			ours, oursCPU = ours+time.Since(start), oursCPU+cpuUsed()-cpu
			if err := p.Cleanup(ctx); err != nil {
				b.Fatal(err)
			}
			total, elements, cpuSpent := commitFloor(b, p, services, slices)
			floor, floorElements, floorCPU = floor+total, floorElements+elements, floorCPU+cpuSpent
		}
		perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
		b.ReportMetric(perOp(ours), "ours-ms")
		b.ReportMetric(perOp(floor), "floor-ms")
		b.ReportMetric(perOp(floorElements), "floor-elements-ms")
		b.ReportMetric(float64(ours)/float64(floor), "ours/floor")
		// CPU time (this process, in the kernel too, and nft) holds up under load from
		// elsewhere, where wall-clock time stretches the side that computes more.
		b.ReportMetric(perOp(oursCPU), "ours-cpu-ms")
		b.ReportMetric(perOp(floorCPU), "floor-cpu-ms")
		b.ReportMetric(float64(oursCPU)/float64(floorCPU), "ours/floor-cpu")
	})
}

// commitFloor writes the table p would write for the objects into the empty kernel, with
// all the Go work (render, plan, encoding) done before the clock starts, then deletes
// the table. It returns the time of the commits, of the element batch alone, and the CPU
// time of the commits.
func commitFloor(b *testing.B, p *Proxier, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) (total, elements, cpu time.Duration) {
	ctx := context.Background()
	fs := p.families[0]
	want := Render(p.cfg, fs.family, services, slices)
	prepare, commit, ops := fs.nft.NewTransaction(), fs.nft.NewTransaction(), &opLog{}
	decls := planFullSteps(fullSteps{prepare: prepare, fill: ops, swap: ops, commit: commit}, want, existingObjects{})
	writer := newNetlinkElements(NFTFamily(fs.family), p.cfg.TableName, nil)
	batch, err := writer.encode(ops.ops, decls)
	if err != nil {
		b.Fatalf("encode the elements: %v", err)
	}
	start, cpuStart := time.Now(), cpuUsed()
	if err := fs.nft.Run(ctx, prepare); err != nil {
		b.Fatal(err)
	}
	elementsStart := time.Now()
	if err := writer.commit(batch); err != nil {
		b.Fatal(err)
	}
	elements = time.Since(elementsStart)
	if err := fs.nft.Run(ctx, commit); err != nil {
		b.Fatal(err)
	}
	total, cpu = time.Since(start), cpuUsed()-cpuStart
	if err := p.Cleanup(ctx); err != nil {
		b.Fatal(err)
	}
	return total, elements, cpu
}
