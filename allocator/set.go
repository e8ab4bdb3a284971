package allocator

import (
	"fmt"
	"net/netip"
)

// Family is an IP family.
type Family int

// The IP families; the values match the IP version.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// FamilyOf returns the family of ip (IPv4-mapped IPv6 addresses are IPv4), or
// 0 for the zero Addr.
func FamilyOf(ip netip.Addr) Family {
	switch ip = ip.Unmap(); {
	case ip.Is4():
		return IPv4
	case ip.Is6():
		return IPv6
	}
	return 0
}

// Set is an ordered list of ranges, for example one per family or a primary
// range and an overflow range. It is safe for concurrent use; its list of
// ranges is fixed at construction.
type Set struct {
	ranges []*Range
}

// NewSet returns a Set that allocates from ranges in the order given.
func NewSet(ranges ...*Range) *Set {
	return &Set{ranges: append([]*Range(nil), ranges...)}
}

// Ranges returns the ranges in order.
func (s *Set) Ranges() []*Range {
	return append([]*Range(nil), s.ranges...)
}

// RangeFor returns the first range whose CIDR contains ip, or nil.
func (s *Set) RangeFor(ip netip.Addr) *Range {
	ip = ip.Unmap()
	for _, r := range s.ranges {
		if r.cidr.Contains(ip) {
			return r
		}
	}
	return nil
}

// AllocateNext allocates from the first range of family that has room. It
// fails with ErrFull when all of them are full, and with an error wrapping
// ErrNotInRange when the Set has no range of that family.
func (s *Set) AllocateNext(family Family) (netip.Addr, error) {
	var tried []netip.Prefix
	for _, r := range s.ranges {
		if r.Family() != family {
			continue
		}
		ip, err := r.AllocateNext()
		if err == nil || !isFull(err) {
			return ip, err
		}
		tried = append(tried, r.cidr)
	}
	if len(tried) == 0 {
		return netip.Addr{}, fmt.Errorf("no %s range configured (ranges: %v): %w; add a %s range or request another IP family",
			family, s.cidrs(), ErrNotInRange, family)
	}
	return netip.Addr{}, fmt.Errorf("all %s ranges %v: %w; delete unused Services or add another range", family, tried, ErrFull)
}

// Allocate allocates ip in the range that contains it.
func (s *Set) Allocate(ip netip.Addr) error {
	r, err := s.rangeOrErr(ip)
	if err != nil {
		return err
	}
	return r.Allocate(ip)
}

// Release releases ip in the range that contains it (see Range.Release).
func (s *Set) Release(ip netip.Addr) error {
	r, err := s.rangeOrErr(ip)
	if err != nil {
		return err
	}
	return r.Release(ip)
}

// Has reports whether ip is allocated in one of the ranges.
func (s *Set) Has(ip netip.Addr) bool {
	r := s.RangeFor(ip)
	return r != nil && r.Has(ip)
}

func (s *Set) rangeOrErr(ip netip.Addr) (*Range, error) {
	if r := s.RangeFor(ip); r != nil {
		return r, nil
	}
	return nil, fmt.Errorf("%s: %w of any configured range %v; pick an IP from one of them", ip, ErrNotInRange, s.cidrs())
}

func (s *Set) cidrs() []netip.Prefix {
	out := make([]netip.Prefix, len(s.ranges))
	for i, r := range s.ranges {
		out[i] = r.cidr
	}
	return out
}
