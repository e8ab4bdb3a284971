// Command bench runs every benchmark of the project (`make bench`), takes the median of each
// figure over several runs, compares it with its target, and writes one report: a markdown
// table on stdout and JSON under bench/results/.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube-clusterip/kube-clusterip/hack/internal/benchreport"
)

// suite is one `go test -bench` invocation.
type suite struct {
	Package string
	Bench   string
	Count   int
	Extra   []string
}

// figure is one reported number with its target.
type figure struct {
	Label    string
	Bench    string // benchmark name without the -GOMAXPROCS suffix
	Metric   string // unit as go test prints it: ns/op, converge-s, ...
	Max, Min float64
	Equal    *float64 // exact target every run must meet, e.g. 0 errors
	Upstream string
}

func exactly(v float64) *float64 { return &v }

var suites = []suite{
	{Package: "./allocator", Bench: ".", Count: 5, Extra: []string{"-benchmem"}},
	{Package: "./controllers/ipam", Bench: "BenchmarkAdmission", Count: 3, Extra: []string{"-benchtime", "1x"}},
	{Package: "./controllers/endpoints", Bench: "^BenchmarkConverge$", Count: 3, Extra: []string{"-benchtime", "1x"}},
	{Package: "./datapath", Bench: "BenchmarkFullSync|BenchmarkEndpointChange|BenchmarkConnectionRate", Count: 3},
}

var figures = []figure{
	{Label: "allocator: AllocateNext+Release, /12 at 0 %", Bench: "BenchmarkAllocateNext/fill=0%", Metric: "ns/op", Max: 200, Upstream: "5.1 µs"},
	{Label: "allocator: AllocateNext+Release, /12 at 50 %", Bench: "BenchmarkAllocateNext/fill=50%", Metric: "ns/op", Max: 200},
	{Label: "allocator: AllocateNext+Release, /12 at 99 %", Bench: "BenchmarkAllocateNext/fill=99%", Metric: "ns/op", Max: 200, Upstream: "14.7 µs"},
	{Label: "allocator: AllocateNext+Release, /12 at 99.99 %", Bench: "BenchmarkAllocateNext/fill=99.99%", Metric: "ns/op", Max: 200, Upstream: "2.2 ms"},
	{Label: "allocator: fill a /12", Bench: "BenchmarkFill", Metric: "ns/op", Max: 150e6, Upstream: "2.13 s"},
	{Label: "allocator: memory of a full /12 (KiB)", Bench: "BenchmarkMemory//12-full", Metric: "KiB", Max: 160},
	{Label: "allocator: memory of a /64 with 100k IPs (MiB)", Bench: "BenchmarkMemory//64-100k", Metric: "MiB", Max: 16},
	{Label: "admission, 1 replica: 1000 Services, 50 clients, mutating webhook p50 (ms)", Bench: "BenchmarkAdmission/replicas=1", Metric: "p50-ms"},
	{Label: "admission, 1 replica: mutating webhook p99 (ms)", Bench: "BenchmarkAdmission/replicas=1", Metric: "p99-ms"},
	{Label: "admission, 1 replica: validating webhook p99 (ms)", Bench: "BenchmarkAdmission/replicas=1", Metric: "validate-p99-ms"},
	{Label: "admission, 1 replica: failed or denied creates", Bench: "BenchmarkAdmission/replicas=1", Metric: "errors", Equal: exactly(0)},
	{Label: "admission, 1 replica: distinct ClusterIPs of the 1000 Services", Bench: "BenchmarkAdmission/replicas=1", Metric: "distinct-ips", Equal: exactly(1000)},
	{Label: "admission, 3 replicas: 1000 Services, 50 clients, mutating webhook p50 (ms)", Bench: "BenchmarkAdmission/replicas=3", Metric: "p50-ms"},
	{Label: "admission, 3 replicas: mutating webhook p99 (ms)", Bench: "BenchmarkAdmission/replicas=3", Metric: "p99-ms", Max: 2},
	{Label: "admission, 3 replicas: validating webhook p99 (ms)", Bench: "BenchmarkAdmission/replicas=3", Metric: "validate-p99-ms"},
	{Label: "admission, 3 replicas: failed or denied creates", Bench: "BenchmarkAdmission/replicas=3", Metric: "errors", Equal: exactly(0)},
	{Label: "admission, 3 replicas: distinct ClusterIPs of the 1000 Services", Bench: "BenchmarkAdmission/replicas=3", Metric: "distinct-ips", Equal: exactly(1000)},
	{Label: "admission, floor (a webhook that reads nothing): mutating webhook p50 (ms)", Bench: "BenchmarkAdmission/floor", Metric: "p50-ms"},
	{Label: "admission, floor: mutating webhook p99 (ms)", Bench: "BenchmarkAdmission/floor", Metric: "p99-ms"},
	{Label: "endpoints: 1000 Services x 10 pods, converge (s)", Bench: "BenchmarkConverge", Metric: "converge-s", Max: 30, Upstream: "11.75 s (QPS 1000)"},
	{Label: "endpoints: readiness flip -> both APIs, p50 (ms)", Bench: "BenchmarkConverge", Metric: "flip-p50-ms", Max: 50, Upstream: "23.35 ms"},
	{Label: "endpoints: readiness flip -> both APIs, p99 (ms)", Bench: "BenchmarkConverge", Metric: "flip-p99-ms", Max: 500, Upstream: "31-52 ms"},
	{Label: "endpoints: readiness flip -> EndpointSlice, p50 (ms)", Bench: "BenchmarkConverge", Metric: "slice-p50-ms", Max: 50, Upstream: "22.25 ms"},
	{Label: "endpoints: readiness flip -> Endpoints, p50 (ms)", Bench: "BenchmarkConverge", Metric: "endpoints-p50-ms", Max: 50, Upstream: "20.83 ms"},
	{Label: "datapath: full sync, 1k Services x 10", Bench: "BenchmarkFullSync/services=1000/type=ClusterIP", Metric: "ns/op", Upstream: "0.71 s"},
	{Label: "datapath: full sync, 10k Services x 10", Bench: "BenchmarkFullSync/services=10000/type=ClusterIP", Metric: "ns/op", Max: 3e9, Upstream: "14.95 s"},
	{Label: "datapath: ruleset lines at 10k Services", Bench: "BenchmarkFullSync/services=10000/type=ClusterIP", Metric: "ruleset-lines", Upstream: "117,736"},
	{Label: "datapath: one endpoint change at 10k (event path)", Bench: "BenchmarkEndpointChange/services=10000/type=ClusterIP/api=update", Metric: "ns/op", Max: 50e6, Upstream: "418 ms"},
	{Label: "datapath: full sync, 10k NodePort Services x 10 (half Local)", Bench: "BenchmarkFullSync/services=10000/type=NodePort", Metric: "ns/op"},
	{Label: "datapath: one endpoint change at 10k NodePort Services", Bench: "BenchmarkEndpointChange/services=10000/type=NodePort/api=update", Metric: "ns/op"},
	{Label: "datapath: connections via ClusterIP / direct, 10 Services", Bench: "BenchmarkConnectionRate/services=10", Metric: "ratio", Min: 0.97},
	{Label: "datapath: connections via ClusterIP / direct, 10k Services", Bench: "BenchmarkConnectionRate/services=10000", Metric: "ratio", Min: 0.97},
	{Label: "datapath: connections via a ClusterIP of one DNAT rule (the kernel's NAT alone) / direct, 10k Services", Bench: "BenchmarkConnectionRate/services=10000", Metric: "natfloor-ratio"},
}

// result is one figure's outcome in the report.
type result struct {
	figure
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Met    *bool     `json:"met,omitempty"`
}

type report struct {
	benchreport.Machine
	Go      string   `json:"go"`
	Results []result `json:"results"`
	Raw     string   `json:"raw"`
}

func main() {
	only := flag.String("only", "", "run only the suites whose package contains this string")
	outDir := flag.String("out", "bench/results", "directory for the JSON report")
	flag.Parse()

	var raw bytes.Buffer
	for _, s := range suites {
		if *only != "" && !strings.Contains(s.Package, *only) {
			continue
		}
		args := append([]string{"test", s.Package, "-run", "^$", "-bench", s.Bench, "-count", strconv.Itoa(s.Count)}, s.Extra...)
		fmt.Fprintf(os.Stderr, "== go %s\n", strings.Join(args, " "))
		cmd := exec.Command("go", args...)
		cmd.Stdout = io.MultiWriter(&raw, os.Stderr)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v (its figures are reported as missing)\n", s.Package, err)
		}
	}
	runs := benchreport.Parse(raw.String())
	rep := report{Machine: benchreport.ThisMachine(), Go: runtime.Version(), Raw: raw.String()}
	for _, f := range figures {
		r := result{figure: f, Runs: runs[f.Bench][f.Metric]}
		if len(r.Runs) > 0 {
			r.Median = benchreport.Median(r.Runs)
			if f.Max > 0 || f.Min > 0 || f.Equal != nil {
				met := (f.Max == 0 || r.Median <= f.Max) && (f.Min == 0 || r.Median >= f.Min) &&
					(f.Equal == nil || !slices.ContainsFunc(r.Runs, func(v float64) bool { return v != *f.Equal }))
				r.Met = &met
			}
		}
		rep.Results = append(rep.Results, r)
	}
	printMarkdown(os.Stdout, rep)
	path, err := benchreport.WriteJSON(*outDir, "", rep.Commit, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", path)
}

// human prints a value in the unit a reader expects: durations for ns/op.
func human(metric string, v float64) string {
	if metric == "ns/op" {
		return time.Duration(v).Round(time.Duration(max(1, v/1000))).String()
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func printMarkdown(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nBenchmarks of %s, %s, %d CPUs (%s), kernel %s, %s; medians\n\n", rep.Commit, rep.Date, rep.CPUs, rep.CPU, rep.Kernel, rep.Go)
	fmt.Fprintln(w, "| figure | median | runs | target | upstream | met |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	for _, r := range rep.Results {
		target := "-"
		if r.Max > 0 {
			target = "<= " + human(r.Metric, r.Max)
		} else if r.Min > 0 {
			target = ">= " + human(r.Metric, r.Min)
		} else if r.Equal != nil {
			target = "= " + human(r.Metric, *r.Equal)
		}
		medianText, met := "not measured", "-"
		if len(r.Runs) > 0 {
			medianText = human(r.Metric, r.Median)
		}
		if r.Met != nil {
			met = benchreport.Verdict(*r.Met)
		}
		upstream := r.Upstream
		if upstream == "" {
			upstream = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s |\n", r.Label, medianText, len(r.Runs), target, upstream, met)
	}
}
