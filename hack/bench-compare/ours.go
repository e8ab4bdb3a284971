package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/kube-clusterip/kube-clusterip/hack/internal/benchreport"
)

// goBench runs `go test -bench` on one of our packages and returns, per benchmark name (without
// the -GOMAXPROCS suffix), each metric's values over the runs.
func goBench(env []string, pkg, bench string, count int, extra ...string) (benchreport.Runs, error) {
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
	return benchreport.Parse(out.String()), nil
}
