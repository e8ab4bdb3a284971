package allocator

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestSet(t *testing.T) {
	small := func(t *testing.T) *Set {
		return NewSet(mustRange(t, "10.0.0.0/30"), mustRange(t, "fd00::/127"), mustRange(t, "10.0.1.0/30"))
	}
	tests := []struct {
		name string
		run  func(t *testing.T, s *Set)
	}{
		{name: "AllocateNext fills the first range of the family, then the next", run: func(t *testing.T, s *Set) {
			var got []netip.Addr
			for range 4 {
				a, err := s.AllocateNext(IPv4)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, a)
			}
			for i, a := range got {
				want := s.Ranges()[0]
				if i >= 2 {
					want = s.Ranges()[2]
				}
				if s.RangeFor(a) != want {
					t.Errorf("address #%d %s came from %v", i, a, s.RangeFor(a).CIDR())
				}
			}
			_, err := s.AllocateNext(IPv4)
			if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "all IPv4 ranges [10.0.0.0/30 10.0.1.0/30]: range is full") {
				t.Errorf("AllocateNext on full ranges = %v", err)
			}
		}},
		{name: "AllocateNext by family", run: func(t *testing.T, s *Set) {
			a, err := s.AllocateNext(IPv6)
			if err != nil || a != ip("fd00::1") {
				t.Fatalf("AllocateNext(IPv6) = %s, %v", a, err)
			}
		}},
		{name: "AllocateNext for a family without a range", run: func(t *testing.T, s *Set) {
			_, err := NewSet(mustRange(t, "10.0.0.0/30")).AllocateNext(IPv6)
			if !errors.Is(err, ErrNotInRange) || !strings.Contains(err.Error(), "no IPv6 range configured") {
				t.Errorf("AllocateNext(IPv6) = %v", err)
			}
		}},
		{name: "Allocate, Has and Release route by address", run: func(t *testing.T, s *Set) {
			for _, a := range []string{"10.0.1.2", "fd00::1"} {
				if err := s.Allocate(ip(a)); err != nil {
					t.Fatal(err)
				}
				if !s.Has(ip(a)) || !s.RangeFor(ip(a)).Has(ip(a)) {
					t.Fatalf("%s not allocated in its range", a)
				}
				if err := s.Release(ip(a)); err != nil || s.Has(ip(a)) {
					t.Fatalf("Release(%s) = %v, Has = %v", a, err, s.Has(ip(a)))
				}
			}
		}},
		{name: "addresses outside every range", run: func(t *testing.T, s *Set) {
			out := ip("192.168.0.1")
			if s.RangeFor(out) != nil || s.Has(out) {
				t.Error("RangeFor/Has found a range for an outside address")
			}
			for _, err := range []error{s.Allocate(out), s.Release(out)} {
				if !errors.Is(err, ErrNotInRange) || !strings.Contains(err.Error(), "10.0.0.0/30 fd00::/127 10.0.1.0/30") {
					t.Errorf("err = %v, want ErrNotInRange listing the ranges", err)
				}
			}
		}},
		{name: "the network address is found but not assignable", run: func(t *testing.T, s *Set) {
			if err := s.Allocate(ip("10.0.0.0")); !errors.Is(err, ErrNotInRange) {
				t.Errorf("Allocate(network) = %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, small(t)) })
	}
}

func TestFamilyOf(t *testing.T) {
	tests := []struct {
		name string
		ip   netip.Addr
		want Family
	}{
		{name: "IPv4", ip: ip("10.0.0.1"), want: IPv4},
		{name: "IPv4-mapped IPv6 is IPv4", ip: ip("::ffff:10.0.0.1"), want: IPv4},
		{name: "IPv6", ip: ip("fd00::1"), want: IPv6},
		{name: "zero Addr", ip: netip.Addr{}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FamilyOf(tt.ip); got != tt.want {
				t.Errorf("FamilyOf(%s) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}
