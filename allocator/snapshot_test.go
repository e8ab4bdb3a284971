package allocator

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func allocated(r *Range) []netip.Addr {
	var out []netip.Addr
	r.ForEach(func(a netip.Addr) { out = append(out, a) })
	return out
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		cidr     string
		allocate func(r *Range)
		maxBytes int
	}{
		{name: "empty /12", cidr: "10.96.0.0/12", allocate: func(*Range) {}, maxBytes: 32},
		{name: "full /12 is a few bytes", cidr: "10.96.0.0/12", allocate: func(r *Range) {
			for {
				if _, err := r.AllocateNext(); err != nil {
					return
				}
			}
		}, maxBytes: 48},
		{name: "scattered /12", cidr: "10.96.0.0/12", allocate: func(r *Range) {
			for range 5000 {
				r.AllocateNext()
			}
		}},
		{name: "edges of a /12", cidr: "10.96.0.0/12", allocate: func(r *Range) {
			r.Allocate(ip("10.96.0.1"))
			r.Allocate(ip("10.111.255.254"))
		}},
		{name: "both ends of an IPv6 /64", cidr: "fd00::/64", allocate: func(r *Range) {
			r.Allocate(ip("fd00::1"))
			r.Allocate(ip("fd00::ffff:ffff:ffff:ffff"))
			for range 1000 {
				r.AllocateNext()
			}
		}},
		{name: "full /30", cidr: "10.0.0.0/30", allocate: func(r *Range) {
			r.Allocate(ip("10.0.0.1"))
			r.Allocate(ip("10.0.0.2"))
		}},
		{name: "empty /31", cidr: "10.0.0.0/31", allocate: func(*Range) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := mustRange(t, tt.cidr)
			tt.allocate(src)
			data, err := src.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxBytes > 0 && len(data) > tt.maxBytes {
				t.Errorf("snapshot is %d bytes, want at most %d", len(data), tt.maxBytes)
			}
			dst := mustRange(t, tt.cidr)
			dst.Allocate(dst.addrAt(0)) // Restore replaces what was there
			if err := dst.Restore(data); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(allocated(src), allocated(dst)) || src.Used() != dst.Used() || src.Free() != dst.Free() {
				t.Fatalf("restored range differs: Used %d vs %d, Free %d vs %d", src.Used(), dst.Used(), src.Free(), dst.Free())
			}
		})
	}
}

func TestSnapshotLeavesOutReservedAndQuarantined(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	src := mustRange(t, "10.0.0.0/24", WithQuarantine(time.Minute), WithClock(clock.Now))
	src.Allocate(ip("10.0.0.1"))
	src.Allocate(ip("10.0.0.2"))
	src.Release(ip("10.0.0.2"))
	src.Reserve(ip("10.0.0.3"))
	data, _ := src.Snapshot()

	dst := mustRange(t, "10.0.0.0/24")
	if err := dst.Restore(data); err != nil {
		t.Fatal(err)
	}
	if got := allocated(dst); !slices.Equal(got, []netip.Addr{ip("10.0.0.1")}) || dst.Reserved() != 0 {
		t.Errorf("restored %v with %d reserved; want only 10.0.0.1", got, dst.Reserved())
	}
}

func TestRestoreKeepsReservationsAndQuarantine(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	src := mustRange(t, "10.0.0.0/24")
	src.Allocate(ip("10.0.0.5"))
	data, _ := src.Snapshot()

	r := mustRange(t, "10.0.0.0/24", WithQuarantine(time.Minute), WithClock(clock.Now))
	r.Reserve(ip("10.0.0.1"))
	r.Allocate(ip("10.0.0.5"))
	r.Release(ip("10.0.0.5")) // quarantined, but the snapshot says allocated
	r.Allocate(ip("10.0.0.6"))
	r.Release(ip("10.0.0.6")) // quarantined, not in the snapshot
	if err := r.Restore(data); err != nil {
		t.Fatal(err)
	}
	switch {
	case !r.IsReserved(ip("10.0.0.1")):
		t.Error("reservation lost")
	case !r.Has(ip("10.0.0.5")) || r.IsQuarantined(ip("10.0.0.5")):
		t.Error("10.0.0.5 should be allocated, not quarantined")
	case !r.IsQuarantined(ip("10.0.0.6")):
		t.Error("10.0.0.6 should still be in quarantine")
	case r.Used() != 1 || r.Free() != 254-3:
		t.Errorf("Used = %d, Free = %d", r.Used(), r.Free())
	}
}

func TestRestoreErrors(t *testing.T) {
	src := mustRange(t, "10.0.0.0/24")
	src.Allocate(ip("10.0.0.7"))
	good, _ := src.Snapshot()
	flipped := slices.Clone(good)
	flipped[len(flipped)-6] ^= 0x40

	tests := []struct {
		name    string
		cidr    string
		setup   func(r *Range)
		data    []byte
		wantErr string
		wantIs  error
	}{
		{name: "other CIDR", cidr: "10.0.1.0/24", data: good, wantErr: "snapshot is of range 10.0.0.0/24, not 10.0.1.0/24"},
		{name: "empty data", cidr: "10.0.0.0/24", data: nil, wantErr: "not an allocator snapshot"},
		{name: "truncated", cidr: "10.0.0.0/24", data: good[:len(good)-3], wantErr: "checksum mismatch"},
		{name: "bit flip", cidr: "10.0.0.0/24", data: flipped, wantErr: "checksum mismatch"},
		{name: "allocates a reserved address", cidr: "10.0.0.0/24", setup: func(r *Range) { r.Reserve(ip("10.0.0.7")) }, data: good, wantErr: "the snapshot allocates 10.0.0.7", wantIs: ErrReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, tt.cidr)
			if tt.setup != nil {
				tt.setup(r)
			}
			r.Allocate(r.addrAt(100))
			err := r.Restore(tt.data)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Restore = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Restore = %v, want it to wrap %v", err, tt.wantIs)
			}
			if !r.Has(r.addrAt(100)) || r.Used() != 1 {
				t.Error("a failed Restore changed the range")
			}
		})
	}
}

func TestRestoreRejectsOffsetsBeyondTheRange(t *testing.T) {
	// A hand-built snapshot of a /30 whose one literal word also marks the
	// broadcast address (offset 2).
	r := mustRange(t, "10.0.0.0/30")
	r.Allocate(ip("10.0.0.1"))
	data, _ := r.Snapshot()
	body := data[:len(data)-4]
	body[len(body)-8] = 0b111
	forged := appendCRC(body)
	if err := mustRange(t, "10.0.0.0/30").Restore(forged); err == nil || !strings.Contains(err.Error(), "beyond the range") {
		t.Fatalf("Restore = %v, want an offset-beyond-range error", err)
	}
}

func appendCRC(body []byte) []byte {
	return binary.LittleEndian.AppendUint32(slices.Clone(body), crc32.ChecksumIEEE(body))
}
