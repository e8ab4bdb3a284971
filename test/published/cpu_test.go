package published

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

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
		if now-before >= 0.02 {
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
