package published

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tail := " S 42 100 100 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 8 0 123 4096 100"
	for _, tc := range []struct {
		name    string
		line    string
		want    procStat
		wantErr string
	}{
		{name: "utime and stime add up, in clock ticks", line: "1234 (kube-apiserver)" + tail,
			want: procStat{comm: "kube-apiserver", ppid: 42, cpuSeconds: 3.25}},
		{name: "a command may hold spaces and parentheses", line: "7 (a (b) c)" + tail,
			want: procStat{comm: "a (b) c", ppid: 42, cpuSeconds: 3.25}},
		{name: "no command", line: "7 S 1 2", wantErr: "not a /proc/<pid>/stat line"},
		{name: "cut short", line: "7 (etcd) S 1 2 3", wantErr: "fields after the command"},
		{name: "a time that is not a number", line: "7 (etcd)" + strings.Replace(tail, " 250 ", " x ", 1), wantErr: "bad ppid, utime or stime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseProcStat(%q) error = %v, want one containing %q", tc.line, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseProcStat(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestSelfCPUCountsWorkDone(t *testing.T) {
	meter := SelfCPU()
	before, err := meter()
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel has charged us at least two ticks; on a busy machine that takes
	// longer, never forever.
	deadline := time.Now().Add(time.Minute)
	for x := 0; time.Now().Before(deadline); x++ {
		if x%1_000_000 != 0 {
			continue
		}
		now, err := meter()
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 2.0/clockTicksPerSecond {
			return
		}
	}
	t.Fatalf("a minute of spinning charged this process less than two clock ticks")
}

func TestChildCPUFindsAChildByItsCommand(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatalf("start a child: %v", err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	if seconds, err := ChildCPU("sleep")(); err != nil || seconds < 0 {
		t.Errorf("ChildCPU(sleep) = %v, %v; want the child's CPU time", seconds, err)
	}
	if _, err := ChildCPU("no-such-child")(); err == nil || !strings.Contains(err.Error(), "no child process") {
		t.Errorf("ChildCPU(no-such-child) error = %v, want no child process", err)
	}
}

func TestSumCPU(t *testing.T) {
	fixed := func(seconds float64) CPUMeter { return func() (float64, error) { return seconds, nil } }
	if got, err := SumCPU(fixed(1.5), fixed(2))(); err != nil || got != 3.5 {
		t.Errorf("SumCPU(1.5 s, 2 s) = %v, %v; want 3.5", got, err)
	}
	gone := ProcessCPU(-1)
	if _, err := SumCPU(fixed(1), gone)(); err == nil {
		t.Errorf("SumCPU with a meter of no process gave no error")
	}
}
