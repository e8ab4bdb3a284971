package allocator

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
)

// benchRange returns a /12 (or other cidr) with fill of its capacity
// allocated by AllocateNext, so allocated addresses spread like in use.
func benchRange(b *testing.B, cidr string, fill float64) *Range {
	b.Helper()
	r, err := ParseRange(cidr, WithRandom(rand.New(rand.NewPCG(1, 2))))
	if err != nil {
		b.Fatal(err)
	}
	for n := uint64(fill * float64(r.Capacity())); n > 0; n-- {
		if _, err := r.AllocateNext(); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkAllocateNext measures one AllocateNext plus the Release that keeps
// the fill level constant, on a /12 at several fill levels.
func BenchmarkAllocateNext(b *testing.B) {
	for _, fill := range []struct {
		name string
		frac float64
	}{{"0%", 0}, {"50%", 0.5}, {"99%", 0.99}, {"99.99%", 0.9999}} {
		r := benchRange(b, DefaultCIDR, fill.frac)
		b.Run("fill="+fill.name, func(b *testing.B) {
			for b.Loop() {
				a, err := r.AllocateNext()
				if err != nil {
					b.Fatal(err)
				}
				r.Release(a)
			}
		})
	}
}

// BenchmarkFill measures filling an empty /12 with AllocateNext until it is
// full; ns/op is per whole /12.
func BenchmarkFill(b *testing.B) {
	var n int
	for b.Loop() {
		r := benchRange(b, DefaultCIDR, 0)
		n = 0
		for {
			_, err := r.AllocateNext()
			if errors.Is(err, ErrFull) {
				break
			}
			n++
		}
	}
	if n != 1<<20-2 {
		b.Fatalf("filled %d addresses, want %d", n, 1<<20-2)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/addr")
}

// BenchmarkAllocateRelease measures Allocate and Release of one specific
// address in a half-full /12.
func BenchmarkAllocateRelease(b *testing.B) {
	r := benchRange(b, DefaultCIDR, 0.5)
	a := netip.MustParseAddr("10.96.0.10") // static band: free at 50 %
	for b.Loop() {
		if err := r.Allocate(a); err != nil {
			b.Fatal(err)
		}
		r.Release(a)
	}
}

// BenchmarkRestore measures restoring a snapshot of a full /12.
func BenchmarkRestore(b *testing.B) {
	data, err := benchRange(b, DefaultCIDR, 1).Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	r := benchRange(b, DefaultCIDR, 0)
	b.ReportMetric(float64(len(data)), "snapshot-bytes")
	for b.Loop() {
		if err := r.Restore(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemory reports the heap a Range holds: a full /12, and a /64 with
// 100k addresses handed out by AllocateNext (spread over the whole /64).
func BenchmarkMemory(b *testing.B) {
	for _, tt := range []struct {
		name  string
		cidr  string
		count int
		unit  string
		scale float64
	}{
		{name: "/12-full", cidr: DefaultCIDR, count: 1<<20 - 2, unit: "KiB", scale: 1 << 10},
		{name: "/64-100k", cidr: "fd00:10:96::/64", count: 100_000, unit: "MiB", scale: 1 << 20},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var held uint64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				r := benchRange(b, tt.cidr, 0)
				for range tt.count {
					if _, err := r.AllocateNext(); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(r)
			}
			b.ReportMetric(float64(held)/tt.scale, tt.unit)
		})
	}
}
