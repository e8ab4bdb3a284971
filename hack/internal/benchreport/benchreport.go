// Package benchreport holds what the bench commands (hack/bench, hack/bench-compare) share: the
// figures `go test -bench` prints, their medians, the machine they ran on, and the JSON file.
package benchreport

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine says when, on what and at which commit a report was taken; reports embed it first.
type Machine struct {
	Date   string `json:"date"`
	Commit string `json:"commit"`
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu"`
	Kernel string `json:"kernel"`
}

// ThisMachine describes this machine and the checkout's HEAD, now.
func ThisMachine() Machine {
	return Machine{Date: time.Now().UTC().Format(time.RFC3339), Commit: output("git", "rev-parse", "--short", "HEAD"),
		CPUs: runtime.NumCPU(), CPU: cpuModel(), Kernel: output("uname", "-r")}
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown"
}

// Runs maps a benchmark's name (without the -GOMAXPROCS suffix) to each metric's values over
// the runs, in the order they ran.
type Runs map[string]map[string][]float64

// benchLine matches `BenchmarkName-2   	 N	 value unit	 value unit ...`.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

// Parse reads the output of `go test -bench`; other lines are skipped.
func Parse(out string) Runs {
	runs := Runs{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			if v, err := strconv.ParseFloat(fields[i], 64); err == nil {
				if runs[m[1]] == nil {
					runs[m[1]] = map[string][]float64{}
				}
				runs[m[1]][fields[i+1]] = append(runs[m[1]][fields[i+1]], v)
			}
		}
	}
	return runs
}

// Median of values (the mean of the middle two for an even count); values must not be empty.
func Median(values []float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// Verdict is how the tables show whether a target was met.
func Verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

// WriteJSON writes report, indented, to dir/<prefix><UTC time>-<commit>.json and returns the
// file's path.
func WriteJSON(dir, prefix, commit string, report any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, prefix+time.Now().UTC().Format("20060102-150405")+"-"+commit+".json")
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, data, 0o644)
}
