package allocator

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// mustRange builds a deterministic Range or fails the test.
func mustRange(t testing.TB, cidr string, opts ...Option) *Range {
	t.Helper()
	opts = append([]Option{WithRandom(rand.New(rand.NewPCG(7, 11)))}, opts...)
	r, err := ParseRange(cidr, opts...)
	if err != nil {
		t.Fatalf("ParseRange(%q): %v", cidr, err)
	}
	return r
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestNewRange(t *testing.T) {
	tests := []struct {
		name       string
		cidr       string
		wantErr    string
		wantCIDR   string
		capacity   uint64
		bandFirst  string
		bandLast   string
		wantFamily Family
	}{
		{name: "default /12 has a 256-address static band", cidr: "10.96.0.0/12", wantCIDR: "10.96.0.0/12", capacity: 1<<20 - 2, bandFirst: "10.96.0.1", bandLast: "10.96.1.0", wantFamily: IPv4},
		{name: "host bits are masked", cidr: "10.96.3.4/12", wantCIDR: "10.96.0.0/12", capacity: 1<<20 - 2, bandFirst: "10.96.0.1", bandLast: "10.96.1.0", wantFamily: IPv4},
		{name: "/24 band is the 16-address minimum", cidr: "192.168.0.0/24", wantCIDR: "192.168.0.0/24", capacity: 254, bandFirst: "192.168.0.1", bandLast: "192.168.0.16", wantFamily: IPv4},
		{name: "/20 band is size/16", cidr: "172.16.0.0/20", wantCIDR: "172.16.0.0/20", capacity: 4094, bandFirst: "172.16.0.1", bandLast: "172.16.1.0", wantFamily: IPv4},
		{name: "/27 still has a band", cidr: "10.0.0.0/27", wantCIDR: "10.0.0.0/27", capacity: 30, bandFirst: "10.0.0.1", bandLast: "10.0.0.16", wantFamily: IPv4},
		{name: "/28 has no band", cidr: "10.0.0.0/28", wantCIDR: "10.0.0.0/28", capacity: 14, wantFamily: IPv4},
		{name: "/30 holds two addresses", cidr: "10.0.0.0/30", wantCIDR: "10.0.0.0/30", capacity: 2, wantFamily: IPv4},
		{name: "/31 holds none, as upstream", cidr: "10.0.0.0/31", wantCIDR: "10.0.0.0/31", capacity: 0, wantFamily: IPv4},
		{name: "IPv6 /64 holds 2^64-1", cidr: "fd00::/64", wantCIDR: "fd00::/64", capacity: 1<<64 - 1, bandFirst: "fd00::1", bandLast: "fd00::100", wantFamily: IPv6},
		{name: "IPv6 /108", cidr: "fd00:10:96::/108", wantCIDR: "fd00:10:96::/108", capacity: 1<<20 - 1, bandFirst: "fd00:10:96::1", bandLast: "fd00:10:96::100", wantFamily: IPv6},
		{name: "IPv6 /127 holds one address", cidr: "fd00::/127", wantCIDR: "fd00::/127", capacity: 1, wantFamily: IPv6},
		{name: "IPv4 /32 is rejected", cidr: "10.0.0.1/32", wantErr: "a /32 holds no assignable address"},
		{name: "IPv6 /128 is rejected", cidr: "fd00::1/128", wantErr: "a /128 holds no assignable address"},
		{name: "IPv6 larger than /64 is rejected", cidr: "fd00::/63", wantErr: "larger than /64 are not supported"},
		{name: "IPv4-mapped prefix is rejected", cidr: "::ffff:10.0.0.0/104", wantErr: "write the IPv4 form"},
		{name: "garbage is rejected", cidr: "10.96.0.0", wantErr: "parse range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRange(tt.cidr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.CIDR().String(); got != tt.wantCIDR {
				t.Errorf("CIDR() = %s, want %s", got, tt.wantCIDR)
			}
			if r.Capacity() != tt.capacity || r.Free() != tt.capacity {
				t.Errorf("Capacity() = %d, Free() = %d, want %d", r.Capacity(), r.Free(), tt.capacity)
			}
			if r.Family() != tt.wantFamily {
				t.Errorf("Family() = %v, want %v", r.Family(), tt.wantFamily)
			}
			first, last, ok := r.StaticBand()
			if ok != (tt.bandFirst != "") || (ok && (first != ip(tt.bandFirst) || last != ip(tt.bandLast))) {
				t.Errorf("StaticBand() = %s, %s, %v; want %q, %q", first, last, ok, tt.bandFirst, tt.bandLast)
			}
		})
	}
	if _, err := NewRange(netip.Prefix{}); err == nil || !strings.Contains(err.Error(), "invalid range") {
		t.Errorf("NewRange(zero prefix) err = %v", err)
	}
}

func TestStaticBandSizeMatchesUpstreamFormula(t *testing.T) {
	tests := []struct {
		name     string
		hostBits uint
		want     uint64
	}{
		{name: "/31", hostBits: 1, want: 0},
		{name: "/28 (size 16)", hostBits: 4, want: 0},
		{name: "/27 (size 32) rounds up to 16", hostBits: 5, want: 16},
		{name: "/24 (size 256)", hostBits: 8, want: 16},
		{name: "/23 (size 512)", hostBits: 9, want: 32},
		{name: "/21 (size 2048)", hostBits: 11, want: 128},
		{name: "/20 (size 4096)", hostBits: 12, want: 256},
		{name: "/12 capped at 256", hostBits: 20, want: 256},
		{name: "IPv6 /64 capped at 256", hostBits: 64, want: 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := staticBandSize(tt.hostBits); got != tt.want {
				t.Errorf("staticBandSize(%d) = %d, want %d", tt.hostBits, got, tt.want)
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	tests := []struct {
		name    string
		cidr    string
		setup   func(r *Range)
		ip      string
		wantErr error
		wantMsg string
	}{
		{name: "free address", cidr: "10.96.0.0/12", ip: "10.96.0.10"},
		{name: "last assignable IPv4 address", cidr: "10.96.0.0/12", ip: "10.111.255.254"},
		{name: "first address of a /30", cidr: "10.0.0.0/30", ip: "10.0.0.1"},
		{name: "last address of a /30", cidr: "10.0.0.0/30", ip: "10.0.0.2"},
		{name: "IPv4-mapped form of an address", cidr: "10.96.0.0/12", ip: "::ffff:10.96.0.10"},
		{name: "last address of an IPv6 /64", cidr: "fd00::/64", ip: "fd00::ffff:ffff:ffff:ffff"},
		{name: "first address of an IPv6 /127", cidr: "fd00::/127", ip: "fd00::1"},
		{name: "allocated twice", cidr: "10.96.0.0/12", setup: func(r *Range) { r.Allocate(ip("10.96.0.10")) }, ip: "10.96.0.10", wantErr: ErrAllocated, wantMsg: "10.96.0.10 in 10.96.0.0/12: provided IP is already allocated; request a different IP"},
		{name: "reserved", cidr: "10.96.0.0/12", setup: func(r *Range) { r.Reserve(ip("10.96.0.10")) }, ip: "10.96.0.10", wantErr: ErrReserved, wantMsg: "provided IP is reserved"},
		{name: "network address", cidr: "10.96.0.0/12", ip: "10.96.0.0", wantErr: ErrNotInRange, wantMsg: "it is the network address of the range); the assignable IPs are 10.96.0.1 to 10.111.255.254"},
		{name: "IPv4 broadcast address", cidr: "10.96.0.0/12", ip: "10.111.255.255", wantErr: ErrNotInRange, wantMsg: "it is the broadcast address"},
		{name: "outside the range", cidr: "10.96.0.0/12", ip: "10.112.0.1", wantErr: ErrNotInRange, wantMsg: "10.112.0.1: provided IP is not in the valid range 10.96.0.0/12 (it is outside the range)"},
		{name: "below the range", cidr: "10.96.0.0/12", ip: "10.95.255.255", wantErr: ErrNotInRange},
		{name: "other family", cidr: "10.96.0.0/12", ip: "fd00::1", wantErr: ErrNotInRange},
		{name: "zero Addr", cidr: "10.96.0.0/12", ip: "", wantErr: ErrNotInRange, wantMsg: "not a valid IP address"},
		{name: "/30 broadcast", cidr: "10.0.0.0/30", ip: "10.0.0.3", wantErr: ErrNotInRange},
		{name: "/31 has nothing to give", cidr: "10.0.0.0/31", ip: "10.0.0.1", wantErr: ErrNotInRange, wantMsg: "the range has no assignable IPs"},
		{name: "IPv6 network address", cidr: "fd00::/64", ip: "fd00::", wantErr: ErrNotInRange},
		{name: "IPv6 outside a /64", cidr: "fd00::/64", ip: "fd00:0:0:1::1", wantErr: ErrNotInRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, tt.cidr)
			if tt.setup != nil {
				tt.setup(r)
			}
			var addr netip.Addr
			if tt.ip != "" {
				addr = ip(tt.ip)
			}
			usedBefore := r.Used()
			err := r.Allocate(addr)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Allocate(%s) = %v, want %v", tt.ip, err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if err != nil {
				if r.Used() != usedBefore {
					t.Errorf("failed Allocate changed Used from %d to %d", usedBefore, r.Used())
				}
				return
			}
			if !r.Has(addr) || r.Used() != usedBefore+1 {
				t.Errorf("after Allocate: Has = %v, Used = %d", r.Has(addr), r.Used())
			}
		})
	}
}

func TestAllocateNextPrefersTheDynamicBand(t *testing.T) {
	r := mustRange(t, "10.0.0.0/24") // band: .1 to .16
	for i := range 254 - 16 {
		got, err := r.AllocateNext()
		if err != nil {
			t.Fatalf("AllocateNext #%d: %v", i, err)
		}
		if got.As4()[3] <= 16 {
			t.Fatalf("AllocateNext #%d = %s, in the static band while the dynamic band has room", i, got)
		}
	}
	// The dynamic band is full: the static band is used now, then nothing.
	for i := range 16 {
		got, err := r.AllocateNext()
		if err != nil {
			t.Fatalf("AllocateNext in the static band #%d: %v", i, err)
		}
		if got.As4()[3] > 16 || got.As4()[3] == 0 {
			t.Fatalf("AllocateNext = %s, want a static-band address", got)
		}
	}
	_, err := r.AllocateNext()
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "range is full") {
		t.Fatalf("AllocateNext on a full range = %v, want ErrFull", err)
	}
	if r.Used() != 254 || r.Free() != 0 {
		t.Errorf("Used = %d, Free = %d", r.Used(), r.Free())
	}
}

func TestAllocateNextEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		cidr    string
		reserve []string
		want    []string // every address AllocateNext must return, in any order
	}{
		{name: "/30 hands out .1 and .2 only", cidr: "10.0.0.0/30", want: []string{"10.0.0.1", "10.0.0.2"}},
		{name: "/31 is full from the start", cidr: "10.0.0.0/31"},
		{name: "/127 hands out ::1 only", cidr: "fd00::/127", want: []string{"fd00::1"}},
		{name: "reserved addresses are skipped", cidr: "10.0.0.0/29", reserve: []string{"10.0.0.2", "10.0.0.5"}, want: []string{"10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, tt.cidr)
			for _, s := range tt.reserve {
				if err := r.Reserve(ip(s)); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for {
				a, err := r.AllocateNext()
				if errors.Is(err, ErrFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, a.String())
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("AllocateNext handed out %v, want %v", got, want)
			}
		})
	}
}

func TestAllocateNextIPv6SlashSixtyFour(t *testing.T) {
	r := mustRange(t, "fd00:10:96::/64")
	seen := map[netip.Addr]bool{}
	for range 1000 {
		a, err := r.AllocateNext()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] || !r.CIDR().Contains(a) || a == r.CIDR().Addr() {
			t.Fatalf("AllocateNext = %s: duplicate or not assignable", a)
		}
		seen[a] = true
	}
	if r.Used() != 1000 || r.Free() != 1<<64-1-1000 {
		t.Errorf("Used = %d, Free = %d", r.Used(), r.Free())
	}
	// Addresses spread over the range instead of piling up at the start.
	var high int
	for a := range seen {
		if a.As16()[8] >= 0x80 {
			high++
		}
	}
	if high < 400 || high > 600 {
		t.Errorf("%d of 1000 addresses in the upper half; want a random spread", high)
	}
}

func TestRelease(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(r *Range)
		ip      string
		wantErr error
		wantHas bool
		wantRes bool
	}{
		{name: "allocated address becomes free", setup: func(r *Range) { r.Allocate(ip("10.96.0.10")) }, ip: "10.96.0.10"},
		{name: "free address is a no-op", ip: "10.96.0.10"},
		{name: "reserved address stays reserved", setup: func(r *Range) { r.Reserve(ip("10.96.0.10")) }, ip: "10.96.0.10", wantRes: true},
		{name: "outside the range", ip: "10.112.0.1", wantErr: ErrNotInRange},
		{name: "broadcast address", ip: "10.111.255.255", wantErr: ErrNotInRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, "10.96.0.0/12")
			if tt.setup != nil {
				tt.setup(r)
			}
			err := r.Release(ip(tt.ip))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Release(%s) = %v, want %v", tt.ip, err, tt.wantErr)
			}
			if r.Has(ip(tt.ip)) != tt.wantHas || r.IsReserved(ip(tt.ip)) != tt.wantRes {
				t.Errorf("Has = %v, IsReserved = %v", r.Has(ip(tt.ip)), r.IsReserved(ip(tt.ip)))
			}
			if r.Used() != 0 {
				t.Errorf("Used = %d, want 0", r.Used())
			}
		})
	}
}

func TestReserve(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(r *Range)
		ip       string
		wantErr  error
		wantUsed uint64
	}{
		{name: "free address", ip: "10.96.0.10"},
		{name: "reserving twice is a no-op", setup: func(r *Range) { r.Reserve(ip("10.96.0.10")) }, ip: "10.96.0.10"},
		{name: "allocated address", setup: func(r *Range) { r.Allocate(ip("10.96.0.10")) }, ip: "10.96.0.10", wantErr: ErrAllocated, wantUsed: 1},
		{name: "network address", ip: "10.96.0.0", wantErr: ErrNotInRange},
		{name: "outside the range", ip: "192.168.0.1", wantErr: ErrNotInRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, "10.96.0.0/12")
			if tt.setup != nil {
				tt.setup(r)
			}
			err := r.Reserve(ip(tt.ip))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Reserve(%s) = %v, want %v", tt.ip, err, tt.wantErr)
			}
			wantReserved := uint64(0)
			if err == nil {
				wantReserved = 1
			}
			if r.Reserved() != wantReserved || r.Used() != tt.wantUsed || r.Free() != r.Capacity()-wantReserved-tt.wantUsed {
				t.Errorf("Reserved = %d, Used = %d, Free = %d", r.Reserved(), r.Used(), r.Free())
			}
			if r.IsReserved(ip(tt.ip)) != (err == nil) || (err == nil && r.Has(ip(tt.ip))) {
				t.Errorf("IsReserved = %v, Has = %v", r.IsReserved(ip(tt.ip)), r.Has(ip(tt.ip)))
			}
		})
	}
}

func TestUnreserve(t *testing.T) {
	r := mustRange(t, "10.0.0.0/30")
	r.Reserve(ip("10.0.0.1"))
	r.Allocate(ip("10.0.0.2"))
	if _, err := r.AllocateNext(); !errors.Is(err, ErrFull) {
		t.Fatalf("AllocateNext with one reserved and one allocated = %v, want ErrFull", err)
	}
	r.Unreserve(ip("10.0.0.2")) // allocated, not reserved: nothing happens
	r.Unreserve(ip("10.9.9.9")) // outside: nothing happens
	if !r.Has(ip("10.0.0.2")) {
		t.Fatal("Unreserve of an allocated address released it")
	}
	r.Unreserve(ip("10.0.0.1"))
	if r.IsReserved(ip("10.0.0.1")) || r.Reserved() != 0 || r.Free() != 1 {
		t.Fatalf("after Unreserve: IsReserved = %v, Reserved = %d, Free = %d", r.IsReserved(ip("10.0.0.1")), r.Reserved(), r.Free())
	}
	if got, err := r.AllocateNext(); err != nil || got != ip("10.0.0.1") {
		t.Fatalf("AllocateNext = %s, %v; want the unreserved 10.0.0.1", got, err)
	}
}

// fakeClock is a settable clock for quarantine tests.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

func TestQuarantine(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *Range, clock *fakeClock)
	}{
		{name: "a released address is not handed out until the hold time is over", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Allocate(ip("10.0.0.2"))
			r.Release(ip("10.0.0.1"))
			if r.Has(ip("10.0.0.1")) || !r.IsQuarantined(ip("10.0.0.1")) {
				t.Fatal("released address is not in quarantine")
			}
			if r.Used() != 1 || r.Free() != 0 || r.Quarantined() != 1 {
				t.Fatalf("Used = %d, Free = %d, Quarantined = %d", r.Used(), r.Free(), r.Quarantined())
			}
			if _, err := r.AllocateNext(); !errors.Is(err, ErrFull) {
				t.Fatalf("AllocateNext during quarantine = %v, want ErrFull", err)
			}
			clock.Advance(time.Minute - time.Nanosecond)
			if _, err := r.AllocateNext(); !errors.Is(err, ErrFull) {
				t.Fatalf("AllocateNext just before the end = %v, want ErrFull", err)
			}
			clock.Advance(time.Nanosecond)
			if got, err := r.AllocateNext(); err != nil || got != ip("10.0.0.1") {
				t.Fatalf("AllocateNext after quarantine = %s, %v", got, err)
			}
		}},
		{name: "a specific Allocate of a quarantined address succeeds", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Release(ip("10.0.0.1"))
			if err := r.Allocate(ip("10.0.0.1")); err != nil {
				t.Fatalf("Allocate of a quarantined address: %v", err)
			}
			if !r.Has(ip("10.0.0.1")) || r.IsQuarantined(ip("10.0.0.1")) || r.Used() != 1 {
				t.Fatal("address is not allocated")
			}
			clock.Advance(time.Hour) // the stale quarantine entry must not free it
			if !r.Has(ip("10.0.0.1")) || r.Free() != 1 {
				t.Fatalf("expired stale entry freed an allocated address: Has = %v, Free = %d", r.Has(ip("10.0.0.1")), r.Free())
			}
		}},
		{name: "releasing a quarantined address is a no-op", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Release(ip("10.0.0.1"))
			clock.Advance(30 * time.Second)
			if err := r.Release(ip("10.0.0.1")); err != nil {
				t.Fatal(err)
			}
			clock.Advance(30 * time.Second) // the hold time was not restarted
			if r.IsQuarantined(ip("10.0.0.1")) || r.Free() != 2 {
				t.Fatalf("IsQuarantined = %v, Free = %d", r.IsQuarantined(ip("10.0.0.1")), r.Free())
			}
		}},
		{name: "reserving a quarantined address ends its quarantine", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Release(ip("10.0.0.1"))
			if err := r.Reserve(ip("10.0.0.1")); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Hour)
			if !r.IsReserved(ip("10.0.0.1")) || r.Quarantined() != 0 || r.Free() != 1 {
				t.Fatalf("IsReserved = %v, Quarantined = %d, Free = %d", r.IsReserved(ip("10.0.0.1")), r.Quarantined(), r.Free())
			}
		}},
		{name: "re-released address waits for its second hold time", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Release(ip("10.0.0.1"))
			clock.Advance(40 * time.Second)
			r.Allocate(ip("10.0.0.1"))
			r.Release(ip("10.0.0.1"))
			clock.Advance(40 * time.Second) // first hold time over, second not
			if !r.IsQuarantined(ip("10.0.0.1")) {
				t.Fatal("the first release's deadline ended the second quarantine")
			}
			clock.Advance(20 * time.Second)
			if r.IsQuarantined(ip("10.0.0.1")) {
				t.Fatal("still quarantined after the second hold time")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			r := mustRange(t, "10.0.0.0/30", WithQuarantine(time.Minute), WithClock(clock.Now))
			tt.run(t, r, clock)
		})
	}
}

func TestCooling(t *testing.T) {
	// 10.0.0.0/29: six addresses, no static band.
	tests := []struct {
		name string
		run  func(t *testing.T, r *Range, clock *fakeClock)
	}{
		{name: "a released address is handed out after every other free one", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.3"))
			r.Release(ip("10.0.0.3"))
			if r.Free() != 6 || r.Used() != 0 || r.Has(ip("10.0.0.3")) || r.IsQuarantined(ip("10.0.0.3")) {
				t.Fatalf("a cooling address is not plain free: Free = %d, Used = %d", r.Free(), r.Used())
			}
			for range 5 {
				if got, err := r.AllocateNext(); err != nil || got == ip("10.0.0.3") {
					t.Fatalf("AllocateNext = %s, %v while other addresses are free", got, err)
				}
			}
			if got, err := r.AllocateNext(); err != nil || got != ip("10.0.0.3") {
				t.Fatalf("AllocateNext = %s, %v; want the cooling 10.0.0.3, the only one left", got, err)
			}
			if _, err := r.AllocateNext(); !errors.Is(err, ErrFull) {
				t.Fatalf("AllocateNext of a full range = %v, want ErrFull", err)
			}
		}},
		{name: "the address released first is handed out first", run: func(t *testing.T, r *Range, clock *fakeClock) {
			for _, a := range []string{"10.0.0.5", "10.0.0.2", "10.0.0.4"} {
				r.Allocate(ip(a))
				r.Release(ip(a))
			}
			for _, a := range []string{"10.0.0.1", "10.0.0.3", "10.0.0.6"} {
				r.Allocate(ip(a))
			}
			for _, want := range []string{"10.0.0.5", "10.0.0.2", "10.0.0.4"} {
				if got, err := r.AllocateNext(); err != nil || got != ip(want) {
					t.Fatalf("AllocateNext = %s, %v; want %s", got, err, want)
				}
			}
		}},
		{name: "an address released again at the same instant counts from its last release", run: func(t *testing.T, r *Range, clock *fakeClock) {
			// 10.0.0.5 is released, taken back and released again with the clock
			// unchanged: its first queue entry has the deadline of the second.
			r.Allocate(ip("10.0.0.5"))
			r.Release(ip("10.0.0.5"))
			r.Allocate(ip("10.0.0.5"))
			r.Allocate(ip("10.0.0.2"))
			r.Release(ip("10.0.0.2"))
			r.Release(ip("10.0.0.5"))
			for _, a := range []string{"10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.6"} {
				r.Allocate(ip(a))
			}
			for _, want := range []string{"10.0.0.2", "10.0.0.5"} {
				if got, err := r.AllocateNext(); err != nil || got != ip(want) {
					t.Fatalf("AllocateNext = %s, %v; want %s", got, err, want)
				}
			}
		}},
		{name: "cooling ends after its time", run: func(t *testing.T, r *Range, clock *fakeClock) {
			for _, a := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"} {
				r.Allocate(ip(a))
			}
			r.Release(ip("10.0.0.5"))
			clock.Advance(time.Minute)
			r.Release(ip("10.0.0.4")) // cooling from now on
			// 10.0.0.5 and 10.0.0.6 are plain free; AllocateNext starts at a random
			// position, so over many tries it hands out both, and never 10.0.0.4.
			seen := map[netip.Addr]bool{}
			for range 64 {
				got, err := r.AllocateNext()
				if err != nil || got == ip("10.0.0.4") {
					t.Fatalf("AllocateNext = %s, %v; want the cooled-down 10.0.0.5 or the never used 10.0.0.6", got, err)
				}
				seen[got] = true
				r.Release(got)
				clock.Advance(time.Minute) // got cools down; 10.0.0.4 too, after the first round
				r.Allocate(ip("10.0.0.4"))
				r.Release(ip("10.0.0.4"))
			}
			if !seen[ip("10.0.0.5")] || !seen[ip("10.0.0.6")] {
				t.Fatalf("AllocateNext handed out only %v of the two free addresses", seen)
			}
		}},
		{name: "allocating or reserving a cooling address ends its cooling", run: func(t *testing.T, r *Range, clock *fakeClock) {
			r.Allocate(ip("10.0.0.1"))
			r.Allocate(ip("10.0.0.2"))
			r.Release(ip("10.0.0.1"))
			r.Release(ip("10.0.0.2"))
			if err := r.Allocate(ip("10.0.0.1")); err != nil || !r.Has(ip("10.0.0.1")) {
				t.Fatalf("Allocate of a cooling address = %v", err)
			}
			if err := r.Reserve(ip("10.0.0.2")); err != nil || !r.IsReserved(ip("10.0.0.2")) {
				t.Fatalf("Reserve of a cooling address = %v", err)
			}
			clock.Advance(time.Hour) // stale cooling entries must free nothing
			if !r.Has(ip("10.0.0.1")) || !r.IsReserved(ip("10.0.0.2")) || r.Free() != 4 {
				t.Fatalf("Has = %v, IsReserved = %v, Free = %d", r.Has(ip("10.0.0.1")), r.IsReserved(ip("10.0.0.2")), r.Free())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			r := mustRange(t, "10.0.0.0/29", WithCooling(time.Minute), WithClock(clock.Now))
			tt.run(t, r, clock)
		})
	}
}

func TestForEachIsAscendingAndSkipsReservedAndQuarantined(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	r := mustRange(t, "fd00::/64", WithQuarantine(time.Minute), WithClock(clock.Now))
	for _, s := range []string{"fd00::ffff:0:0:1", "fd00::5", "fd00::1", "fd00::1:0:0", "fd00::9"} {
		if err := r.Allocate(ip(s)); err != nil {
			t.Fatal(err)
		}
	}
	r.Reserve(ip("fd00::7"))
	r.Release(ip("fd00::9"))
	var got []string
	r.ForEach(func(a netip.Addr) {
		got = append(got, a.String())
		r.Has(a) // calling back into the Range must not deadlock
	})
	want := []string{"fd00::1", "fd00::5", "fd00::1:0:0", "fd00::ffff:0:0:1"}
	if !slices.Equal(got, want) {
		t.Errorf("ForEach = %v, want %v", got, want)
	}
}

func TestConcurrentAllocateNextHandsOutEachAddressOnce(t *testing.T) {
	r := mustRange(t, "10.0.0.0/22")
	const workers = 8
	results := make([][]netip.Addr, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 1; ; n++ {
				a, err := r.AllocateNext()
				if err != nil {
					return
				}
				if n%3 == 0 { // give every third back, so Release races too
					r.Release(a)
					continue
				}
				results[w] = append(results[w], a)
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, rs := range results {
		for _, a := range rs {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
		}
	}
	if uint64(len(seen)) != r.Capacity() || r.Used() != r.Capacity() {
		t.Errorf("handed out %d, Used = %d, Capacity = %d", len(seen), r.Used(), r.Capacity())
	}
}
