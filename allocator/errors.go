package allocator

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors. The errors returned by this package wrap one of them with
// the address, the range and what to do, so callers branch with errors.Is and
// show err.Error() to users. The texts match kube-apiserver's where one exists.
var (
	// ErrFull means no address can be handed out: every assignable address is
	// allocated, reserved or in quarantine.
	ErrFull = errors.New("range is full")
	// ErrAllocated means the requested address is already in use.
	ErrAllocated = errors.New("provided IP is already allocated")
	// ErrNotInRange means the address is outside the range, or is its network
	// or IPv4 broadcast address, which are never assignable.
	ErrNotInRange = errors.New("provided IP is not in the valid range")
	// ErrReserved means the address is reserved and is never handed out.
	ErrReserved = errors.New("provided IP is reserved")
)

func errFull(cidr netip.Prefix, capacity uint64) error {
	return fmt.Errorf("%s: %w (all %d assignable addresses are allocated, reserved or in quarantine); delete unused Services or add another range",
		cidr, ErrFull, capacity)
}

func errAllocated(ip netip.Addr, cidr netip.Prefix) error {
	return fmt.Errorf("%s in %s: %w; request a different IP or leave the IP empty to get a free one", ip, cidr, ErrAllocated)
}

func errReserved(ip netip.Addr, cidr netip.Prefix) error {
	return fmt.Errorf("%s in %s: %w and is never assigned; request a different IP or leave the IP empty to get a free one", ip, cidr, ErrReserved)
}

func errNotInRange(ip netip.Addr, cidr netip.Prefix, first, last netip.Addr) error {
	why := "it is outside the range"
	switch {
	case !ip.IsValid():
		why = "it is not a valid IP address"
	case ip == cidr.Addr():
		why = "it is the network address of the range"
	case cidr.Addr().Is4() && cidr.Contains(ip):
		why = "it is the broadcast address of the range"
	}
	if first.IsValid() {
		return fmt.Errorf("%s: %w %s (%s); the assignable IPs are %s to %s", ip, ErrNotInRange, cidr, why, first, last)
	}
	return fmt.Errorf("%s: %w %s (%s); the range has no assignable IPs, use a larger prefix", ip, ErrNotInRange, cidr, why)
}
