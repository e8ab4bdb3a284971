package nodeagent

import (
	"testing"
	"time"
)

func TestSyncPacerAppliesTwoChangesAtOnceThenOnePerMinSyncPeriod(t *testing.T) {
	const period = 100 * time.Millisecond
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	pacer := newSyncPacer(period)
	for _, step := range []struct {
		name string
		now  time.Time
		want time.Duration // the wait before this Apply
	}{
		{"a change after a quiet spell", at(0), 0},
		{"one right after it", at(time.Millisecond), 0},
		{"a third in the burst waits", at(2 * time.Millisecond), period - 2*time.Millisecond},
		{"the burst goes on: one per period", at(3 * time.Millisecond), 2*period - 3*time.Millisecond},
		{"after a quiet spell, at once again", at(10 * period), 0},
		{"and the one after it", at(10*period + time.Millisecond), 0},
	} {
		if got := pacer.ReserveN(step.now, 1).DelayFrom(step.now); got != step.want {
			t.Errorf("%s: wait %v, want %v", step.name, got, step.want)
		}
	}
}

func TestSyncPacerWithoutMinSyncPeriodNeverWaits(t *testing.T) {
	pacer := newSyncPacer(0)
	now := time.Now()
	for i := range 10 {
		if got := pacer.ReserveN(now, 1).DelayFrom(now); got != 0 {
			t.Fatalf("Apply %d: wait %v, want none", i, got)
		}
	}
}
