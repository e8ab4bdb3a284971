// Command bench-compare (`make bench-compare`) runs our endpoints and datapath benchmarks and the
// same workloads against upstream v1.37.2 — kube-controller-manager with only its endpoint
// controllers, and kube-proxy in nftables mode — at the same client QPS, and prints one table of
// ratios (ours ÷ upstream) against the targets of issues 12 and 18 (datapath), with JSON under
// bench/results/. The datapath part also puts our full sync beside its kernel floor.
//
// It needs root and re-executes itself under `unshare --net --mount --fork`: the API servers,
// kube-proxy and our datapath benchmark all live in that private network namespace (loopback
// only), so kube-proxy programs only that namespace's nftables, never the host's.
//
//	KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh) go run ./hack/bench-compare --upstream $(hack/upstream-assets.sh)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kube-clusterip/kube-clusterip/hack/internal/benchreport"
	"github.com/kube-clusterip/kube-clusterip/test/published"
)

// options are the command line.
type options struct {
	assets, upstream, workDir, outDir, only string
	proxyType                               string
	qps, services, podsPerService, flips    int
	proxyServices, changes, runs            int
	programmingFlips                        int
	manager                                 string
	upstreamOnly, keep                      bool
}

// figure is one line of the comparison.
type figure struct {
	Label    string  `json:"label"`
	Ours     float64 `json:"ours"`
	Upstream float64 `json:"upstream"`
	// Floor is what the API server or the kernel allows: a minimal writer (endpoints) or a
	// netlink commit of the same table (datapath), measured in the same run.
	Floor            float64 `json:"floor,omitempty"`
	FloorRatio       float64 `json:"floorRatio,omitempty"`
	FloorTarget      float64 `json:"floorTarget,omitempty"` // ours ÷ floor at most
	FloorMeasured    bool    `json:"floorMeasured"`
	FloorMet         bool    `json:"floorMet"`
	Unit             string  `json:"unit"`
	Ratio            float64 `json:"ratio"`
	Target           float64 `json:"target"` // ratio at most
	OursMeasured     bool    `json:"oursMeasured"`
	UpstreamMeasured bool    `json:"upstreamMeasured"`
	Met              bool    `json:"met"`
}

type report struct {
	benchreport.Machine
	QPS     int      `json:"qps"`
	Figures []figure `json:"figures"`
	Errors  []string `json:"errors,omitempty"`
}

const inNetnsEnv = "KUBE_CLUSTERIP_BENCH_COMPARE_OUTER_NETNS"

func main() {
	var o options
	flag.StringVar(&o.assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory of kube-apiserver and etcd (hack/envtest-assets.sh)")
	flag.StringVar(&o.upstream, "upstream", "", "directory of kube-controller-manager and kube-proxy (hack/upstream-assets.sh); default: --assets")
	flag.StringVar(&o.outDir, "out", "bench/results", "directory for the JSON report")
	flag.StringVar(&o.only, "only", "", "run only one part of the comparison: endpoints, datapath or programming (network programming latency)")
	flag.IntVar(&o.qps, "qps", 1000, "client QPS of our manager and of the upstream components (burst: twice that)")
	flag.IntVar(&o.services, "services", 1000, "Services of the endpoints workload (ours: fixed at 1000 by BenchmarkConverge)")
	flag.IntVar(&o.podsPerService, "pods", 10, "ready pods per Service of the endpoints workload")
	flag.IntVar(&o.flips, "flips", 200, "readiness flips of the endpoints workload")
	flag.IntVar(&o.proxyServices, "proxy-services", 10000, "Services (x 10 endpoints) of the datapath workload: 1000 or 10000")
	flag.StringVar(&o.proxyType, "proxy-type", "NodePort", "Service type of the datapath workload: ClusterIP, or NodePort (nodePort 20000+i, every other Service externalTrafficPolicy Local)")
	flag.IntVar(&o.changes, "changes", 10, "single-endpoint changes measured on kube-proxy")
	flag.IntVar(&o.programmingFlips, "programming-changes", 30, "readiness changes each way of the network programming workload (at --proxy-services ClusterIP Services)")
	flag.IntVar(&o.runs, "runs", 1, "runs of each workload on each side (medians)")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs of the control planes and upstream components")
	flag.BoolVar(&o.upstreamOnly, "upstream-only", false, "skip our benchmarks (to try the upstream side at small sizes)")
	flag.Parse()
	if o.upstream == "" {
		o.upstream = o.assets
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(2)
	}
	if os.Getenv(inNetnsEnv) == "" {
		os.Exit(reexecInPrivateNetns())
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

// validate refuses sizes that our benchmarks do not run: the two sides must measure the same
// workload (other sizes only with --upstream-only).
func (o options) validate() error {
	if o.proxyType != string(corev1.ServiceTypeClusterIP) && o.proxyType != string(corev1.ServiceTypeNodePort) {
		return fmt.Errorf("--proxy-type %q: want ClusterIP or NodePort", o.proxyType)
	}
	if o.only != "" && o.only != "endpoints" && o.only != "datapath" && o.only != "programming" {
		return fmt.Errorf("--only %q: want endpoints, datapath or programming", o.only)
	}
	if o.upstreamOnly {
		return nil
	}
	if o.services != 1000 || o.podsPerService != 10 || o.flips != 200 {
		return errors.New("BenchmarkConverge runs 1000 Services x 10 pods and 200 flips: other --services, --pods or --flips only with --upstream-only")
	}
	if o.proxyServices != 1000 && o.proxyServices != 10000 {
		return errors.New("BenchmarkFullSync and BenchmarkEndpointChange run 1000 or 10000 Services: --proxy-services must be one of them")
	}
	return nil
}

// reexecInPrivateNetns runs this program again under `unshare --net --mount --fork`, telling the
// child which network namespace it came from, and returns its exit code.
func reexecInPrivateNetns() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-compare: needs root (it runs kube-proxy and nft in a private network namespace)")
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		return 1
	}
	outer, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		return 1
	}
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--fork", "--", self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), inNetnsEnv+"="+outer)
	// Pass a signal on to our child inside the namespace (unshare itself ignores SIGTERM while
	// it waits), so that the child stops what it started.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare: unshare:", err)
		return 1
	}
	go func() {
		for sig := range signals {
			pid := cmd.Process.Pid
			children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for _, child := range strings.Fields(string(children)) {
				if n, err := strconv.Atoi(child); err == nil {
					_ = syscall.Kill(n, sig.(syscall.Signal))
				}
			}
		}
	}()
	if err := cmd.Wait(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return exitErr.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "bench-compare: unshare:", err)
		return 1
	}
	return 0
}

// requirePrivateNetns refuses to go on unless this process is in a network namespace other
// than the one it was started from and than PID 1's.
func requirePrivateNetns() error {
	here, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	outer := os.Getenv(inNetnsEnv)
	init, _ := os.Readlink("/proc/1/ns/net")
	if outer == "" || here == outer || here == init {
		return fmt.Errorf("refusing to run: not in a private network namespace (here %s, started from %q, PID 1 in %s)", here, outer, init)
	}
	return nil
}

// nodeIP is the address of the private namespace's only other interface (one end of a veth pair
// whose other end stays in the namespace too), which holds
// the default route: kube-apiserver needs a default route to pick its advertise address, and
// kube-proxy finds it on its Node.
const nodeIP = "192.168.50.1"

// setUpNamespace brings up lo and a veth pair with nodeIP and the default route, in the
// private namespace only.
func setUpNamespace() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "bench0", "type", "veth", "peer", "name", "bench1"},
		{"addr", "add", nodeIP + "/24", "dev", "bench0"},
		{"link", "set", "bench0", "up"},
		{"link", "set", "bench1", "up"},
		{"route", "add", "default", "dev", "bench0"},
	} {
		if err := requirePrivateNetns(); err != nil {
			return err
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func run(o options) error {
	if err := requirePrivateNetns(); err != nil {
		return err
	}
	if err := setUpNamespace(); err != nil {
		return err
	}
	for _, b := range []string{filepath.Join(o.assets, "kube-apiserver"), filepath.Join(o.upstream, "kube-controller-manager"), filepath.Join(o.upstream, "kube-proxy")} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w: run hack/envtest-assets.sh and hack/upstream-assets.sh (make bench-compare does)", err)
		}
	}
	var err error
	if o.workDir, err = os.MkdirTemp("", "bench-compare-"); err != nil {
		return err
	}
	logf("logs of the control planes and upstream components in %s", o.workDir)
	ctrl.SetLogger(logr.Discard())
	// A signal cancels the workloads, whose deferred stops then end the control planes and
	// upstream components (kube-apiserver and etcd do not die with us by themselves).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	rep := report{Machine: benchreport.ThisMachine(), QPS: o.qps}
	fail := func(err error) {
		logf("%v", err)
		rep.Errors = append(rep.Errors, err.Error())
	}
	goEnv := []string{"KUBEBUILDER_ASSETS=" + o.assets, "BENCH_QPS=" + strconv.Itoa(o.qps)}

	if o.only == "" || o.only == "endpoints" {
		// Round by round (ours, kube-controller-manager, the floor, the reading floor), so that a
		// machine that drifts during the comparison weighs on every side alike.
		ours, upstream, floor, readingFloor := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
		workload := published.Workload{Services: o.services, PodsPerService: o.podsPerService, Flips: o.flips}
		oursFailed, upstreamFailed, floorFailed, readingFloorFailed := o.upstreamOnly, false, false, false
		// collect runs one side's round, unless an earlier round of that side failed.
		collect := func(failed *bool, into map[string][]float64, side string, run func() (map[string]float64, error)) {
			if *failed {
				return
			}
			figures, err := run()
			if *failed = err != nil; *failed {
				fail(fmt.Errorf("%s: %w", side, err))
			}
			appendFigures(into, figures)
		}
		for round := range o.runs {
			logf("endpoints: round %d of %d", round+1, o.runs)
			if !oursFailed {
				runs, err := goBench(goEnv, "./controllers/endpoints", "^BenchmarkConverge$", 1, "-benchtime", "1x")
				if oursFailed = err != nil; oursFailed {
					fail(err)
				}
				for k, v := range runs["BenchmarkConverge"] {
					ours[k] = append(ours[k], v...)
				}
			}
			collect(&upstreamFailed, upstream, "kube-controller-manager", func() (map[string]float64, error) {
				return runKubeControllerManager(ctx, o, workload)
			})
			collect(&floorFailed, floor, "floor writer", func() (map[string]float64, error) {
				return runFloorWriter(ctx, o, workload, false)
			})
			collect(&readingFloorFailed, readingFloor, "reading floor writer", func() (map[string]float64, error) {
				return runFloorWriter(ctx, o, workload, true)
			})
		}
		endpointsFigure := func(label, unit, key string, floorTarget float64) figure {
			f := compare(label, unit, ours[key], upstream[key], 1, 0.5)
			return f.withFloor(floor[key], floorTarget)
		}
		// Where a converge's time went (on two CPUs it is bound by CPU), beside the floor's; no
		// targets.
		convergePart := func(label, key string) figure {
			return compare("endpoints: converge, "+label, "s", ours[key], upstream[key], 1, 0).withFloor(floor[key], 0)
		}
		// Where a flip's time went, beside the floor's; no targets.
		flipPart := func(label, key string) figure {
			return compare("endpoints: readiness flip, "+label, "ms", ours[key], upstream[key], 1, 0).withFloor(floor[key], 0)
		}
		rep.Figures = append(rep.Figures,
			endpointsFigure(fmt.Sprintf("endpoints: converge from empty, %d Services x %d pods", o.services, o.podsPerService), "s", "converge-s", 1.25),
			// A converge in two parts: reading the cluster until the first object is published
			// (the floor reads nothing), then publishing the rest, comparable with the floor's run.
			compare("endpoints: converge, reading until the first object is published", "s", ours["first-published-s"], upstream["first-published-s"], 1, 0),
			convergePart("publishing from the first object to the last", "publishing-s"),
			// The floor reads nothing. A controller must read the pods before it publishes: the
			// reading floor streams them first and keeps nothing, the least any controller does.
			compare("endpoints: converge from empty, beside a floor that first reads the pods", "s", ours["converge-s"], upstream["converge-s"], 1, 0).
				withFloor(readingFloor["converge-s"], 0),
			compare("endpoints: converge of that reading floor (in the ours column) beside the floor", "s", readingFloor["converge-s"], nil, 1, 0).
				withFloor(floor["converge-s"], 0),
			endpointsFigure("endpoints: readiness flip -> EndpointSlice, p50", "ms", "slice-p50-ms", 1.25),
			endpointsFigure("endpoints: readiness flip -> EndpointSlice, p99", "ms", "slice-p99-ms", 0),
			endpointsFigure("endpoints: readiness flip -> Endpoints, p50", "ms", "endpoints-p50-ms", 1.25),
			endpointsFigure("endpoints: readiness flip -> Endpoints, p99", "ms", "endpoints-p99-ms", 0),
			endpointsFigure("endpoints: readiness flip -> both, p50", "ms", "flip-p50-ms", 1.25),
			// Where a flip's time goes. The pod's status write and its watch event are the API
			// server's alone (the benchmark watches pods too); after the event, the controller
			// reacts and its writes come back through the observer's watches.
			flipPart("the pod's status write returned, p50", "flip-pod-written-p50-ms"),
			flipPart("the pod's change reached a watcher, p50", "flip-pod-seen-p50-ms"),
			flipPart("from the pod's change at a watcher to both APIs, p50", "flip-after-pod-seen-p50-ms"),
			convergePart("CPU time of kube-apiserver", "apiserver-cpu-s"),
			convergePart("CPU time of etcd", "etcd-cpu-s"),
			convergePart("CPU time of the controller's process, with the benchmark's observer", "controller-cpu-s"),
		)
	}

	if o.only == "" || o.only == "datapath" {
		n, kind := strconv.Itoa(o.proxyServices), o.proxyType
		ours := benchreport.Runs{}
		for _, bench := range []string{"BenchmarkFullSync$/^services=" + n + "$/^type=" + kind + "$",
			"BenchmarkFullSyncFloor$/^services=" + n + "$/^type=" + kind + "$",
			"BenchmarkEndpointChange$/^services=" + n + "$/^type=" + kind + "$/^api=update$"} {
			if o.upstreamOnly {
				break
			}
			runs, err := goBench(goEnv, "./datapath", bench, o.runs)
			if err != nil {
				fail(err)
			}
			for name, metrics := range runs {
				ours[name] = metrics
			}
		}
		upstream := map[string][]float64{}
		for range o.runs {
			figures, err := runKubeProxy(ctx, o, o.proxyServices, o.changes, corev1.ServiceType(kind))
			if err != nil {
				fail(fmt.Errorf("kube-proxy: %w", err))
				break
			}
			appendFigures(upstream, figures)
		}
		full := ours["BenchmarkFullSync/services="+n+"/type="+kind]
		change := ours["BenchmarkEndpointChange/services="+n+"/type="+kind+"/api=update"]
		what := n + " " + kind + " Services"
		if kind == string(corev1.ServiceTypeNodePort) {
			what += " (half externalTrafficPolicy Local)"
		}
		floor := ours["BenchmarkFullSyncFloor/services="+n+"/type="+kind]
		rep.Figures = append(rep.Figures,
			// The kernel floor: the same table committed with the Go work done in advance
			// (BenchmarkFullSyncFloor), ours ÷ floor from the same iterations.
			compare("datapath: first full sync, "+what+" x 10 endpoints", "s", full["ns/op"], upstream["full-sync-s"], 1e-9, 0.1).
				withPairedFloor(floor["ours/floor"], floor["floor-ms"], 1e-3, 2),
			compare("datapath: one endpoint change at "+what+" (median)", "ms", change["ns/op"], upstream["change-sync-ms"], 1e-6, 0.02),
			compare("datapath: ruleset lines (nft list table) at "+what, "lines", full["ruleset-lines"], upstream["ruleset-lines"], 1, 0.5),
		)
		// The connection rate has ClusterIP Services of its own, whatever the workload's type.
		rep.Figures = append(rep.Figures, connectionRateFigures(o, goEnv, n, fail)...)
	}

	if o.only == "" || o.only == "programming" {
		rep.Figures = append(rep.Figures, compareProgramming(ctx, o, fail)...)
	}

	printMarkdown(os.Stdout, rep)
	path, err := benchreport.WriteJSON(o.outDir, "compare-", rep.Commit, rep)
	if err != nil {
		return err
	}
	logf("wrote %s", path)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d part(s) of the comparison failed (logs in %s)", len(rep.Errors), o.workDir)
	}
	if o.keep {
		return nil
	}
	return os.RemoveAll(o.workDir)
}

// connectionRateFigures measure new TCP connections through a ClusterIP among n Services against
// connections straight to the pod, alternated in one run (BenchmarkConnectionRate), and the same
// with kube-proxy's rules in place of ours (BenchmarkConnectionRateKubeProxy). The first figure is
// the time per connection, with the direct one as its floor: ours ÷ floor at most 1/0.97 is a rate
// of at least 0.97x direct. The second puts each side's time ÷ direct side by side, with a ClusterIP
// that one DNAT rule serves (the kernel's NAT alone) as the floor. kube-proxy's benchmark has the
// point 10000 only.
func connectionRateFigures(o options, goEnv []string, n string, fail func(error)) []figure {
	if n != "10000" {
		return nil
	}
	name := "BenchmarkConnectionRate/services=" + n
	var ours map[string][]float64
	if !o.upstreamOnly {
		// At least five runs: each is a couple of seconds, and one run's ratio swings by a few
		// percent with the machine.
		got, err := goBench(goEnv, "./datapath", "BenchmarkConnectionRate$/^services="+n+"$", max(o.runs, 5))
		if err != nil {
			fail(err)
		}
		ours = got[name]
	}
	// kube-proxy programs the node once, in a minute or two; the runs repeat the measurement alone.
	got, err := goBench(append(goEnv, "UPSTREAM_ASSETS="+o.upstream), "./datapath",
		"BenchmarkConnectionRateKubeProxy$/^services="+n+"$", max(o.runs, 5), "-tags", "upstreamdiff", "-benchtime", "1x", "-timeout", "30m")
	if err != nil {
		fail(fmt.Errorf("kube-proxy: %w", err))
	}
	upstream := got["BenchmarkConnectionRateKubeProxy/services="+n]
	inverse := func(vs []float64, scale float64) (out []float64) {
		for _, v := range vs {
			out = append(out, scale/v)
		}
		return out
	}
	perRun := func(m map[string][]float64, num, den string) (out []float64) {
		for i := range min(len(m[num]), len(m[den])) {
			out = append(out, m[num][i]/m[den][i])
		}
		return out
	}
	perConnection := compare("datapath: time per new connection through a ClusterIP at "+n+" Services (floor: straight to the pod)",
		"µs", inverse(ours["clusterip-conn/s"], 1e6), inverse(upstream["clusterip-conn/s"], 1e6), 1, 0)
	// The benchmark's ratio is rate via ClusterIP ÷ rate direct; its inverse is time ÷ floor.
	perConnection = perConnection.withPairedFloor(inverse(ours["ratio"], 1), inverse(ours["direct-conn/s"], 1e6), 1, 1/0.97)
	overDirect := compare("datapath: time per new connection through a ClusterIP ÷ straight to the pod, each side's rules, at "+n+
		" Services (floor: a ClusterIP served by one DNAT rule)", "x", inverse(ours["ratio"], 1), inverse(upstream["ratio"], 1), 1, 0)
	overDirect = overDirect.withPairedFloor(perRun(ours, "natfloor-conn/s", "clusterip-conn/s"), inverse(ours["natfloor-ratio"], 1), 1, 0)
	return []figure{perConnection, overDirect}
}

// appendFigures adds one run's figures, keyed by metric, to those of earlier runs.
func appendFigures(all map[string][]float64, run map[string]float64) {
	for k, v := range run {
		all[k] = append(all[k], v)
	}
}

// compare builds one figure from our runs (scaled into unit) and upstream's; either side may be
// missing. Target 0 means the figure has none.
func compare(label, unit string, ours, upstream []float64, scale, target float64) figure {
	f := figure{Label: label, Unit: unit, Target: target, OursMeasured: len(ours) > 0, UpstreamMeasured: len(upstream) > 0}
	if f.OursMeasured {
		f.Ours = benchreport.Median(ours) * scale
	}
	if f.UpstreamMeasured {
		f.Upstream = benchreport.Median(upstream)
	}
	if f.OursMeasured && f.UpstreamMeasured && f.Upstream > 0 {
		f.Ratio = f.Ours / f.Upstream
		f.Met = target == 0 || f.Ratio <= target
	}
	return f
}

// withFloor adds the floor's runs to f; target 0 means the floor is shown without a target.
func (f figure) withFloor(floor []float64, target float64) figure {
	f.FloorTarget, f.FloorMeasured = target, len(floor) > 0
	if !f.FloorMeasured {
		return f
	}
	f.Floor = benchreport.Median(floor)
	if f.OursMeasured && f.Floor > 0 {
		f.FloorRatio = f.Ours / f.Floor
		f.FloorMet = target == 0 || f.FloorRatio <= target
	}
	return f
}

// withPairedFloor adds a floor measured beside another run of ours (BenchmarkFullSyncFloor
// alternates the two in each iteration): the ratio is that run's median ours ÷ floor, the floor
// is shown in the figure's unit (scale converts it).
func (f figure) withPairedFloor(oursOverFloor, floor []float64, scale, target float64) figure {
	f.FloorTarget, f.FloorMeasured = target, len(floor) > 0
	if !f.FloorMeasured {
		return f
	}
	f.Floor = benchreport.Median(floor) * scale
	if len(oursOverFloor) > 0 {
		f.FloorRatio = benchreport.Median(oursOverFloor)
		f.FloorMet = f.FloorRatio <= target
	}
	return f
}

func printMarkdown(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nOurs vs upstream v1.37.2 at client QPS %d: %s, commit %s, %d CPUs (%s), kernel %s\n\n",
		rep.QPS, rep.Date, rep.Commit, rep.CPUs, rep.CPU, rep.Kernel)
	fmt.Fprintln(w, "| figure | ours | upstream | ours ÷ upstream | target | met | floor | ours ÷ floor | target | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, f := range rep.Figures {
		ours, upstream, ratio, met := "not measured", "not measured", "-", "-"
		floor, floorRatio, floorTarget, floorMet := "-", "-", "-", "-"
		if f.OursMeasured {
			ours = num(f.Ours) + " " + f.Unit
		}
		if f.UpstreamMeasured {
			upstream = num(f.Upstream) + " " + f.Unit
		}
		if f.OursMeasured && f.UpstreamMeasured {
			ratio = strconv.FormatFloat(f.Ratio, 'f', 3, 64)
			if f.Target > 0 {
				met = benchreport.Verdict(f.Met)
			}
		}
		if f.FloorMeasured {
			floor = num(f.Floor) + " " + f.Unit
			if f.OursMeasured {
				floorRatio = strconv.FormatFloat(f.FloorRatio, 'f', 3, 64)
			}
			if f.FloorTarget > 0 {
				floorTarget = fmt.Sprintf("<= %.3g", f.FloorTarget)
				if f.OursMeasured {
					floorMet = benchreport.Verdict(f.FloorMet)
				}
			}
		}
		target := "-"
		if f.Target > 0 {
			target = fmt.Sprintf("<= %.2g", f.Target)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f.Label, ours, upstream, ratio, target, met,
			floor, floorRatio, floorTarget, floorMet)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "\nfailed: %s\n", e)
	}
}

func num(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-compare: "+format+"\n", args...)
}
