package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// goBench runs `go test -bench` on one of our packages and returns, per benchmark name (without
// the -GOMAXPROCS suffix), each metric's values over the runs.
func goBench(env []string, pkg, bench string, count int, extra ...string) (map[string]map[string][]float64, error) {
	args := append([]string{"test", pkg, "-run", "^$", "-bench", bench, "-count", strconv.Itoa(count)}, extra...)
	logf("ours: go %s", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, os.Stderr)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return parseBench(out.String()), nil
}

// benchLine matches `BenchmarkName-2   	 N	 value unit	 value unit ...`.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

func parseBench(out string) map[string]map[string][]float64 {
	runs := map[string]map[string][]float64{}
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
