package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// DefaultCIDR is the range kube-apiserver uses when no
// --service-cluster-ip-range is given.
const DefaultCIDR = "10.96.0.0/12"

// options collects what Option values configure.
type options struct {
	quarantine time.Duration
	cooling    time.Duration
	now        func() time.Time
	rand       *rand.Rand
}

// Option configures a Range.
type Option func(*options)

// WithQuarantine holds released addresses for d before AllocateNext hands them
// out again, so a client that still caches an old Service IP does not reach a
// new Service. Allocate of a quarantined address still succeeds.
func WithQuarantine(d time.Duration) Option {
	return func(o *options) { o.quarantine = d }
}

// WithCooling lets released addresses cool for d: AllocateNext hands out every
// other free address first, and an address that is still cooling only when no
// other is free, the one released longest ago first. Unlike WithQuarantine it
// never makes the range full. An address released a moment ago is the one most
// likely to be claimed again by a late view of its old owner (kube-apiserver's
// repair loop re-creates the IPAddress of a Service its cache still shows).
// With a quarantine, released addresses go there instead.
func WithCooling(d time.Duration) Option {
	return func(o *options) { o.cooling = d }
}

// WithClock sets the clock used for quarantine; it must not go backwards.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithRandom sets the source of AllocateNext's random start position, for
// deterministic tests. The Range uses it under its own lock.
func WithRandom(r *rand.Rand) Option {
	return func(o *options) { o.rand = r }
}

// Range hands out the addresses of one CIDR. It is safe for concurrent use.
//
// Addresses are numbered by offset from the first assignable address (the
// network address + 1): offset 0 is 10.96.0.1 in 10.96.0.0/12. The network
// address, and for IPv4 the broadcast address, have no offset and are never
// handed out, as in Kubernetes.
//
// Every address is in exactly one state: free, allocated, reserved or in
// quarantine. The bitmap marks the last three as occupied, so AllocateNext
// skips them all with one search. A free address that is cooling is marked
// too, so that the search skips it; it counts as free everywhere else.
type Range struct {
	cidr     netip.Prefix
	is4      bool
	high     uint64 // IPv6: upper 64 bits of every address in the range
	base     uint64 // numeric value of the network address (IPv6: lower 64 bits)
	capacity uint64 // number of assignable addresses
	band     uint64 // offsets [0, band) form the static band (KEP-3070)

	mu         sync.Mutex
	occupied   *bitmap
	used       uint64
	reserved   map[uint64]struct{}
	quarantine quarantine
	cooling    quarantine // free addresses AllocateNext hands out last
	opts       options
}

// NewRange returns an empty Range over cidr. IPv4 prefixes up to /31 and IPv6
// prefixes from /64 to /127 are accepted; a /31 has no assignable address, as
// in Kubernetes. A prefix with host bits set is masked (10.96.0.5/12 is
// 10.96.0.0/12).
func NewRange(cidr netip.Prefix, opts ...Option) (*Range, error) {
	if !cidr.IsValid() {
		return nil, fmt.Errorf("invalid range %q: give a CIDR such as %s or fd00:10:96::/108", cidr, DefaultCIDR)
	}
	if cidr.Addr().Is4In6() {
		return nil, fmt.Errorf("invalid range %s: IPv4-mapped IPv6 prefixes are not supported; write the IPv4 form", cidr)
	}
	cidr = cidr.Masked()
	hostBits := uint(cidr.Addr().BitLen() - cidr.Bits())
	r := &Range{cidr: cidr, is4: cidr.Addr().Is4(), reserved: make(map[uint64]struct{})}
	switch {
	case r.is4 && hostBits == 0:
		return nil, fmt.Errorf("invalid range %s: a /32 holds no assignable address; use a shorter prefix such as /24", cidr)
	case !r.is4 && hostBits == 0:
		return nil, fmt.Errorf("invalid range %s: a /128 holds no assignable address; use a shorter prefix such as /112", cidr)
	case !r.is4 && hostBits > 64:
		return nil, fmt.Errorf("invalid range %s: IPv6 ranges larger than /64 are not supported; use a /64 or a longer prefix such as /108", cidr)
	}
	if r.is4 {
		a := cidr.Addr().As4()
		r.base = uint64(binary.BigEndian.Uint32(a[:]))
		r.capacity = 1<<hostBits - 2 // network and broadcast
	} else {
		a := cidr.Addr().As16()
		r.high = binary.BigEndian.Uint64(a[:8])
		r.base = binary.BigEndian.Uint64(a[8:])
		r.capacity = 1<<hostBits - 1 // network only; wraps to 2^64-1 for a /64
	}
	r.band = staticBandSize(hostBits)
	r.opts = options{now: time.Now}
	for _, o := range opts {
		o(&r.opts)
	}
	if r.opts.now == nil {
		r.opts.now = time.Now
	}
	if r.opts.rand == nil {
		r.opts.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	r.occupied = newBitmap(hostBits, r.capacity)
	r.quarantine.until = make(map[uint64]hold)
	r.cooling.until = make(map[uint64]hold)
	return r, nil
}

// ParseRange is NewRange for a CIDR string such as "10.96.0.0/12".
func ParseRange(cidr string, opts ...Option) (*Range, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("parse range %q: %w; give a CIDR such as %s", cidr, err, DefaultCIDR)
	}
	return NewRange(p, opts...)
}

// staticBandSize returns how many addresses at the start of a range with
// hostBits host bits form the static band, as upstream calculateRangeOffset
// (pkg/registry/core/service/ipallocator/bitmap.go) computes it:
// min(max(16, size/16), 256) with size = 2^hostBits counting the network and
// broadcast addresses, and no band at all when size <= 16 (a /28 or smaller).
// A /12 gets 256 addresses: 10.96.0.1 to 10.96.1.0.
func staticBandSize(hostBits uint) uint64 {
	const minBand, maxBand, step = 16, 256, 16
	if hostBits >= 12 { // size/16 >= 256; also avoids 1<<64 overflow
		return maxBand
	}
	size := uint64(1) << hostBits
	if size <= minBand {
		return 0
	}
	return max(minBand, size/step)
}

// CIDR returns the range's prefix.
func (r *Range) CIDR() netip.Prefix { return r.cidr }

// Family returns the range's IP family.
func (r *Range) Family() Family {
	if r.is4 {
		return IPv4
	}
	return IPv6
}

// Capacity returns the number of assignable addresses: the prefix's size less
// the network address and, for IPv4, the broadcast address. A /64 holds 2^64-1.
func (r *Range) Capacity() uint64 { return r.capacity }

// StaticBand returns the first and last address of the static band, the low
// part of the range that AllocateNext only uses once the rest is full, so it
// stays free for Services that ask for a specific IP (KEP-3070). ok is false
// when the range is too small to have one.
func (r *Range) StaticBand() (first, last netip.Addr, ok bool) {
	if r.band == 0 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return r.addrAt(0), r.addrAt(r.band - 1), true
}

// Allocate marks ip as allocated. It fails with ErrNotInRange, ErrReserved or
// ErrAllocated. An address in quarantine can be allocated: the quarantine only
// keeps AllocateNext away from it.
func (r *Range) Allocate(ip netip.Addr) error {
	off, ok := r.offsetOf(ip)
	if !ok {
		return r.errNotInRange(ip)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.isReserved(off):
		return errReserved(ip, r.cidr)
	case r.quarantine.remove(off), r.cooling.remove(off):
		// The bit stays set: the address goes from quarantined or cooling to allocated.
	case !r.occupied.set(off):
		return errAllocated(ip, r.cidr)
	}
	r.used++
	return nil
}

// AllocateNext allocates a free address and returns it, or fails with ErrFull.
// It starts at a random position in the dynamic band (everything above the
// static band) and takes the next free address there; only when the dynamic
// band is full does it look in the static band the same way, and only when
// both are full does it take the address that has been cooling longest.
func (r *Range) AllocateNext() (netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireQuarantine()
	off, ok := r.findFree()
	if ok {
		r.occupied.setAt(0, off) // known clear: skip set's check
	} else if off, ok = r.cooling.takeOldest(); !ok {
		return netip.Addr{}, errFull(r.cidr, r.capacity)
	} // a cooling address's bit is set already
	r.used++
	return r.addrAt(off), nil
}

// findFree returns a free offset that is not cooling, preferring the dynamic band.
func (r *Range) findFree() (uint64, bool) {
	if r.used+uint64(len(r.reserved))+uint64(len(r.quarantine.until))+uint64(len(r.cooling.until)) >= r.capacity {
		return 0, false
	}
	if off, ok := r.findFreeIn(r.band, r.capacity); ok {
		return off, true
	}
	return r.findFreeIn(0, r.band)
}

// findFreeIn returns a free offset in [lo, hi), searching from a random start
// and wrapping around once.
func (r *Range) findFreeIn(lo, hi uint64) (uint64, bool) {
	if lo >= hi {
		return 0, false
	}
	start := lo + r.opts.rand.Uint64N(hi-lo)
	if off, ok := r.occupied.nextClear(start); ok && off < hi {
		return off, true
	}
	if off, ok := r.occupied.nextClear(lo); ok && off < start {
		return off, true
	}
	return 0, false
}

// Release frees ip, or puts it in quarantine when the Range has one.
// Releasing an address that is not allocated (free, reserved or already in
// quarantine) does nothing; an address outside the range is ErrNotInRange.
func (r *Range) Release(ip netip.Addr) error {
	off, ok := r.offsetOf(ip)
	if !ok {
		return r.errNotInRange(ip)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.isAllocated(off) {
		return nil
	}
	r.used--
	switch {
	case r.opts.quarantine > 0:
		r.quarantine.add(off, r.opts.now().Add(r.opts.quarantine))
	case r.opts.cooling > 0:
		r.cooling.add(off, r.opts.now().Add(r.opts.cooling)) // the bit stays set
	default:
		r.occupied.clear(off)
	}
	return nil
}

// Has reports whether ip is allocated (not free, reserved or in quarantine).
func (r *Range) Has(ip netip.Addr) bool { return r.check(ip, r.isAllocated) }

// check answers is(offset of ip) under the lock; an address outside the range is false.
func (r *Range) check(ip netip.Addr, is func(off uint64) bool) bool {
	off, ok := r.offsetOf(ip)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return is(off)
}

// Reserve takes ip out of circulation: neither AllocateNext nor Allocate will
// hand it out until Unreserve. Reserving a reserved address does nothing, an
// address in quarantine leaves quarantine, and an allocated address is
// ErrAllocated (release it first).
func (r *Range) Reserve(ip netip.Addr) error {
	off, ok := r.offsetOf(ip)
	if !ok {
		return r.errNotInRange(ip)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.isReserved(off):
		return nil
	case r.quarantine.remove(off), r.cooling.remove(off):
		// The bit stays set: the address goes from quarantined or cooling to reserved.
	case !r.occupied.set(off):
		return fmt.Errorf("reserve %s in %s: %w; release it (delete the Service that holds it) before reserving it", ip, r.cidr, ErrAllocated)
	}
	r.reserved[off] = struct{}{}
	return nil
}

// Unreserve makes a reserved ip free again; for any other address it does
// nothing.
func (r *Range) Unreserve(ip netip.Addr) {
	off, ok := r.offsetOf(ip)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isReserved(off) {
		delete(r.reserved, off)
		r.occupied.clear(off)
	}
}

// IsReserved reports whether ip is reserved.
func (r *Range) IsReserved(ip netip.Addr) bool { return r.check(ip, r.isReserved) }

// IsQuarantined reports whether ip was released and is still held back from
// AllocateNext.
func (r *Range) IsQuarantined(ip netip.Addr) bool {
	return r.check(ip, func(off uint64) bool {
		r.expireQuarantine()
		_, q := r.quarantine.until[off]
		return q
	})
}

// Used returns the number of allocated addresses; reserved and quarantined
// addresses are not counted.
func (r *Range) Used() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used
}

// Reserved returns the number of reserved addresses.
func (r *Range) Reserved() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint64(len(r.reserved))
}

// Quarantined returns the number of released addresses whose quarantine has
// not expired yet.
func (r *Range) Quarantined() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireQuarantine()
	return uint64(len(r.quarantine.until))
}

// Free returns how many addresses AllocateNext can hand out now:
// Capacity - Used - Reserved - Quarantined (cooling addresses are free).
func (r *Range) Free() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireQuarantine()
	return r.capacity - r.used - uint64(len(r.reserved)) - uint64(len(r.quarantine.until))
}

// ForEach calls fn for every allocated address in ascending order. It works on
// a copy taken under the lock, so fn may call back into the Range.
func (r *Range) ForEach(fn func(netip.Addr)) {
	r.mu.Lock()
	words := r.allocatedWords()
	r.mu.Unlock()
	forEachBit(words, func(off uint64) { fn(r.addrAt(off)) })
}

// forEachBit calls fn with the offset of every set bit in ascending order.
func forEachBit(words []indexedWord, fn func(uint64)) {
	for _, iw := range words {
		for w := iw.word; w != 0; w &= w - 1 {
			fn(iw.index*wordBits + uint64(bits.TrailingZeros64(w)))
		}
	}
}

// allocatedWords returns the occupied words without reserved, quarantined and
// cooling addresses: the allocated set, in ascending order. The caller holds r.mu.
func (r *Range) allocatedWords() []indexedWord {
	words := r.occupied.setWords()
	if len(r.reserved) == 0 && len(r.quarantine.until) == 0 && len(r.cooling.until) == 0 {
		return words
	}
	unset := func(off uint64) {
		if i, found := searchWord(words, off/wordBits); found {
			words[i].word &^= 1 << (off % wordBits)
		}
	}
	for off := range r.reserved {
		unset(off)
	}
	for off := range r.quarantine.until {
		unset(off)
	}
	for off := range r.cooling.until {
		unset(off)
	}
	out := words[:0]
	for _, iw := range words {
		if iw.word != 0 {
			out = append(out, iw)
		}
	}
	return out
}

// isAllocated reports whether off is allocated. The caller holds r.mu.
func (r *Range) isAllocated(off uint64) bool {
	if !r.occupied.get(off) || r.isReserved(off) {
		return false
	}
	_, q := r.quarantine.until[off]
	_, c := r.cooling.until[off]
	return !q && !c
}

// isReserved reports whether off is reserved. The caller holds r.mu.
func (r *Range) isReserved(off uint64) bool {
	if len(r.reserved) == 0 {
		return false
	}
	_, ok := r.reserved[off]
	return ok
}

// expireQuarantine frees the addresses whose quarantine is over, and ends the
// cooling of those that have cooled long enough. The caller holds r.mu.
func (r *Range) expireQuarantine() {
	if r.quarantine.pending() == 0 && r.cooling.pending() == 0 {
		return
	}
	now := r.opts.now()
	clear := func(off uint64) { r.occupied.clear(off) }
	r.quarantine.expire(now, clear)
	r.cooling.expire(now, clear)
}

// offsetOf returns the offset of ip, or false when ip is not an assignable
// address of the range. IPv4-mapped IPv6 addresses count as IPv4.
func (r *Range) offsetOf(ip netip.Addr) (uint64, bool) {
	ip = ip.Unmap()
	var d uint64
	if r.is4 {
		if !ip.Is4() {
			return 0, false
		}
		a := ip.As4()
		d = uint64(binary.BigEndian.Uint32(a[:]) - uint32(r.base))
	} else {
		if !ip.Is6() {
			return 0, false
		}
		a := ip.As16()
		if binary.BigEndian.Uint64(a[:8]) != r.high {
			return 0, false
		}
		d = binary.BigEndian.Uint64(a[8:]) - r.base
	}
	off := d - 1 // the network address (d == 0) wraps around and fails below
	return off, off < r.capacity
}

// addrAt returns the address at offset off.
func (r *Range) addrAt(off uint64) netip.Addr {
	v := r.base + 1 + off
	if r.is4 {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], uint32(v))
		return netip.AddrFrom4(a)
	}
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], r.high)
	binary.BigEndian.PutUint64(a[8:], v)
	return netip.AddrFrom16(a)
}

// errNotInRange builds ErrNotInRange for ip with the assignable bounds.
func (r *Range) errNotInRange(ip netip.Addr) error {
	if r.capacity == 0 {
		return errNotInRange(ip, r.cidr, netip.Addr{}, netip.Addr{})
	}
	return errNotInRange(ip, r.cidr, r.addrAt(0), r.addrAt(r.capacity-1))
}

// isFull reports whether err says a range is full.
func isFull(err error) bool { return errors.Is(err, ErrFull) }
