package allocator

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// fuzzCIDRs are the ranges FuzzRangeOps picks from: edge sizes, ranges with
// and without a static band, one, two and three bitmap levels, and sparse
// storage for IPv4 (/7) and IPv6 (/64).
var fuzzCIDRs = []string{
	"10.0.0.0/30", "10.0.0.0/31", "10.0.0.0/28", "10.0.0.0/27", "10.0.0.0/23",
	"10.0.0.0/18", "10.0.0.0/7", "fd00::/120", "fd00::/127", "fd00:1::/64",
}

// maxFuzzOps bounds one input's length so each run stays in milliseconds.
const maxFuzzOps = 1500

// wholeRangeBudget bounds what one input spends on the checks that walk every
// address in use (Snapshot and Restore, ForEach). Each costs about the number
// of occupied addresses plus wholeRangeCheckCost, so an input made mostly of
// them on a busy range ran for tens of milliseconds (hundreds on a loaded
// machine), and the fuzzer, which reruns an interesting input thousands of
// times to minimize it, stalled at 0 execs/s for up to a minute. Past the
// budget those ops do nothing; the final ForEach check always runs.
const wholeRangeBudget = 1 << 13

// wholeRangeCheckCost is the fixed part of a whole-range check (a fresh Range
// and a Snapshot) in budget units, which are occupied addresses.
const wholeRangeCheckCost = 32

// fuzzQuarantine is the hold time when a fuzz input turns quarantine on.
const fuzzQuarantine = time.Minute

// fuzzCooling is the cooling time of released addresses when quarantine is
// off and the seed is even.
const fuzzCooling = 30 * time.Second

// addrState is the model's state of one address; free addresses are absent.
type addrState int

const (
	stateAllocated addrState = iota + 1
	stateReserved
	stateQuarantined
)

// rangeModel is the obvious implementation the Range must agree with: a map
// of the addresses that are not free.
type rangeModel struct {
	prefix     netip.Prefix
	capacity   uint64
	bandLast   netip.Addr // last static-band address; invalid when no band
	bandSize   uint64
	broadcast  netip.Addr // IPv4 only
	state      map[netip.Addr]addrState
	until      map[netip.Addr]time.Time
	quarantine time.Duration
	// cooling holds the free addresses released less than coolFor ago, with
	// their release number: AllocateNext takes them last, lowest number first.
	cooling     map[netip.Addr]uint64
	coolUntil   map[netip.Addr]time.Time
	coolFor     time.Duration
	releases    uint64
	now         time.Time
	dynamicUsed uint64    // occupied addresses above the static band
	counts      [4]uint64 // addresses per addrState
}

func newRangeModel(prefix netip.Prefix, quarantine, cooling time.Duration, now time.Time) *rangeModel {
	hostBits := uint(prefix.Addr().BitLen() - prefix.Bits())
	m := &rangeModel{prefix: prefix, state: map[netip.Addr]addrState{}, until: map[netip.Addr]time.Time{}, quarantine: quarantine,
		cooling: map[netip.Addr]uint64{}, coolUntil: map[netip.Addr]time.Time{}, coolFor: cooling, now: now}
	if prefix.Addr().Is4() {
		m.capacity = 1<<hostBits - 2
		m.broadcast = addrAdd(prefix.Addr(), 1<<hostBits-1)
	} else {
		m.capacity = 1<<hostBits - 1
	}
	// min(max(16, size/16), 256), none for size <= 16; size is 2^hostBits.
	switch {
	case hostBits <= 4:
	case hostBits >= 12:
		m.bandSize = 256
	default:
		m.bandSize = max(16, (uint64(1)<<hostBits)/16)
	}
	if m.bandSize > 0 {
		m.bandLast = addrAdd(prefix.Addr(), m.bandSize)
	}
	return m
}

// addrAdd returns a+n with carry across all bytes (wrapping at the family's end).
func addrAdd(a netip.Addr, n uint64) netip.Addr {
	b := a.As16()
	lo := binary.BigEndian.Uint64(b[8:])
	hi := binary.BigEndian.Uint64(b[:8])
	sum := lo + n
	if sum < lo {
		hi++
	}
	binary.BigEndian.PutUint64(b[8:], sum)
	binary.BigEndian.PutUint64(b[:8], hi)
	if a.Is4() {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

// addrSub returns a-n with borrow.
func addrSub(a netip.Addr, n uint64) netip.Addr {
	b := a.As16()
	lo := binary.BigEndian.Uint64(b[8:])
	hi := binary.BigEndian.Uint64(b[:8])
	if lo < n {
		hi--
	}
	binary.BigEndian.PutUint64(b[8:], lo-n)
	binary.BigEndian.PutUint64(b[:8], hi)
	if a.Is4() {
		return netip.AddrFrom4([4]byte(b[12:]))
	}
	return netip.AddrFrom16(b)
}

func (m *rangeModel) assignable(a netip.Addr) bool {
	return m.prefix.Contains(a) && a != m.prefix.Addr() && a != m.broadcast
}

func (m *rangeModel) inStaticBand(a netip.Addr) bool {
	return m.bandLast.IsValid() && a.Compare(m.bandLast) <= 0
}

func (m *rangeModel) expire() {
	for a, until := range m.until {
		if !until.After(m.now) {
			m.setState(a, 0)
		}
	}
	for a, until := range m.coolUntil {
		if !until.After(m.now) {
			delete(m.cooling, a)
			delete(m.coolUntil, a)
		}
	}
}

// coolest returns the cooling address released first.
func (m *rangeModel) coolest() (netip.Addr, bool) {
	var best netip.Addr
	for a, n := range m.cooling {
		if !best.IsValid() || n < m.cooling[best] {
			best = a
		}
	}
	return best, best.IsValid()
}

// setState moves a to s (0 = free), keeping the counters right.
func (m *rangeModel) setState(a netip.Addr, s addrState) {
	old := m.state[a]
	if (old == 0) != (s == 0) && !m.inStaticBand(a) {
		if s == 0 {
			m.dynamicUsed--
		} else {
			m.dynamicUsed++
		}
	}
	m.counts[old]--
	m.counts[s]++
	delete(m.until, a)
	delete(m.cooling, a)
	delete(m.coolUntil, a)
	if s == 0 {
		delete(m.state, a)
		return
	}
	m.state[a] = s
}

func (m *rangeModel) count(s addrState) uint64 { return m.counts[s] }

// afford takes the cost of a whole-range check from budget and reports whether
// there was enough left.
func (m *rangeModel) afford(budget *int) bool {
	cost := len(m.state) + wholeRangeCheckCost
	if cost > *budget {
		return false
	}
	*budget -= cost
	return true
}

// fuzzAddr turns two input bytes into an address that is often interesting:
// near the start (covering the static band), near the end, in the middle, or
// just outside the range.
func (m *rangeModel) fuzzAddr(v uint16) netip.Addr {
	hostBits := uint(m.prefix.Addr().BitLen() - m.prefix.Bits())
	size := uint64(1) << hostBits // 0 for a /64: arithmetic below wraps correctly
	n := uint64(v & 0x3fff)
	base := m.prefix.Addr()
	if hostBits <= 10 {
		return addrAdd(base, n%(size+2)) // all of it, plus the next two
	}
	switch v >> 14 {
	case 0:
		return addrAdd(base, n%300)
	case 1:
		return addrAdd(base, size-1-n%64)
	case 2:
		return addrAdd(base, size/2+n%64)
	default:
		return addrSub(base, 1+n%4)
	}
}

func FuzzRangeOps(f *testing.F) {
	f.Add(byte(0), false, uint64(1), []byte{1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 2, 0, 1, 1, 0, 0})
	f.Add(byte(3), true, uint64(2), []byte{1, 0, 0, 1, 0, 0, 2, 0, 20, 5, 30, 0, 1, 0, 0, 5, 40, 0, 1, 0, 0, 6, 0, 0})
	f.Add(byte(9), true, uint64(3), []byte{0, 0, 1, 0, 0xff, 0xff, 2, 0, 1, 3, 0x40, 1, 1, 0, 0, 7, 0, 0, 6, 0, 0})
	f.Add(byte(6), false, uint64(4), []byte{3, 0x40, 0, 1, 0, 0, 0, 0x40, 0, 2, 0x40, 0, 7, 0, 0})
	f.Fuzz(fuzzOne)
}

// fuzzOne runs one FuzzRangeOps input.
func fuzzOne(t *testing.T, cidrSel byte, withQuarantine bool, seed uint64, ops []byte) {
	if len(ops) > 3*maxFuzzOps {
		ops = ops[:3*maxFuzzOps]
	}
	prefix := netip.MustParsePrefix(fuzzCIDRs[int(cidrSel)%len(fuzzCIDRs)])
	clock := &fakeClock{now: time.Unix(1e9, 0)}
	var hold, cool time.Duration
	if withQuarantine {
		hold = fuzzQuarantine
	} else if seed%2 == 0 {
		cool = fuzzCooling
	}
	r, err := NewRange(prefix, WithRandom(rand.New(rand.NewPCG(seed, seed))), WithQuarantine(hold), WithCooling(cool), WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	m := newRangeModel(prefix, hold, cool, clock.now)
	budget := wholeRangeBudget
	for i := 0; i+3 <= len(ops); i += 3 {
		op, arg := ops[i], binary.BigEndian.Uint16(ops[i+1:])
		a := m.fuzzAddr(arg)
		// The model's quarantine only ends when its clock moves (op 5): a
		// release holds an address past now.
		switch op % 9 {
		case 0:
			checkAllocate(t, r, m, a)
		case 1:
			checkAllocateNext(t, r, m)
		case 2:
			checkRelease(t, r, m, a)
		case 3:
			checkReserve(t, r, m, a)
		case 4:
			r.Unreserve(a)
			if m.state[a] == stateReserved {
				m.setState(a, 0)
			}
		case 5:
			d := time.Duration(arg%128) * time.Second
			clock.Advance(d)
			m.now = m.now.Add(d)
			m.expire()
		case 6:
			if m.afford(&budget) {
				checkSnapshotRestore(t, r, m)
			}
		case 7:
			if m.afford(&budget) {
				checkAllocated(t, "ForEach", r, m)
			}
		case 8:
			if got, want := r.Has(a), m.state[a] == stateAllocated; got != want {
				t.Fatalf("Has(%s) = %v, want %v", a, got, want)
			}
			if got, want := r.IsQuarantined(a), m.state[a] == stateQuarantined; got != want {
				t.Fatalf("IsQuarantined(%s) = %v, want %v", a, got, want)
			}
		}
		checkCounts(t, r, m)
	}
	checkAllocated(t, "ForEach", r, m)
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if (want == nil) != (err == nil) || !errors.Is(err, want) {
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
}

func checkAllocate(t *testing.T, r *Range, m *rangeModel, a netip.Addr) {
	err := r.Allocate(a)
	switch {
	case !m.assignable(a):
		wantErr(t, "Allocate("+a.String()+")", err, ErrNotInRange)
	case m.state[a] == stateReserved:
		wantErr(t, "Allocate("+a.String()+")", err, ErrReserved)
	case m.state[a] == stateAllocated:
		wantErr(t, "Allocate("+a.String()+")", err, ErrAllocated)
	default:
		wantErr(t, "Allocate("+a.String()+")", err, nil)
		m.setState(a, stateAllocated)
	}
}

func checkAllocateNext(t *testing.T, r *Range, m *rangeModel) {
	got, err := r.AllocateNext()
	occupied := uint64(len(m.state))
	if occupied == m.capacity {
		wantErr(t, "AllocateNext", err, ErrFull)
		return
	}
	wantErr(t, "AllocateNext", err, nil)
	if !m.assignable(got) || m.state[got] != 0 {
		t.Fatalf("AllocateNext = %s, which is not assignable or not free (state %d)", got, m.state[got])
	}
	coolingDynamic := uint64(0)
	for a := range m.cooling {
		if !m.inStaticBand(a) {
			coolingDynamic++
		}
	}
	if m.dynamicUsed+coolingDynamic < m.capacity-m.bandSize && m.inStaticBand(got) {
		t.Fatalf("AllocateNext = %s from the static band while the dynamic band has room", got)
	}
	if occupied+uint64(len(m.cooling)) < m.capacity {
		if _, cooling := m.cooling[got]; cooling {
			t.Fatalf("AllocateNext = %s, which is cooling, while %d other addresses are free", got, m.capacity-occupied-uint64(len(m.cooling)))
		}
	} else if want, _ := m.coolest(); got != want {
		t.Fatalf("AllocateNext = %s with only cooling addresses free, want %s, the one released first", got, want)
	}
	m.setState(got, stateAllocated)
}

func checkRelease(t *testing.T, r *Range, m *rangeModel, a netip.Addr) {
	err := r.Release(a)
	if !m.assignable(a) {
		wantErr(t, "Release("+a.String()+")", err, ErrNotInRange)
		return
	}
	wantErr(t, "Release("+a.String()+")", err, nil)
	if m.state[a] != stateAllocated {
		return
	}
	if m.quarantine > 0 {
		m.setState(a, stateQuarantined)
		m.until[a] = m.now.Add(m.quarantine)
		return
	}
	m.setState(a, 0)
	if m.coolFor > 0 {
		m.releases++
		m.cooling[a] = m.releases
		m.coolUntil[a] = m.now.Add(m.coolFor)
	}
}

func checkReserve(t *testing.T, r *Range, m *rangeModel, a netip.Addr) {
	err := r.Reserve(a)
	switch {
	case !m.assignable(a):
		wantErr(t, "Reserve("+a.String()+")", err, ErrNotInRange)
	case m.state[a] == stateAllocated:
		wantErr(t, "Reserve("+a.String()+")", err, ErrAllocated)
	default:
		wantErr(t, "Reserve("+a.String()+")", err, nil)
		m.setState(a, stateReserved)
	}
}

func checkCounts(t *testing.T, r *Range, m *rangeModel) {
	used, reserved, quarantined := m.count(stateAllocated), m.count(stateReserved), m.count(stateQuarantined)
	if r.Used() != used || r.Reserved() != reserved || r.Quarantined() != quarantined {
		t.Fatalf("Used/Reserved/Quarantined = %d/%d/%d, want %d/%d/%d",
			r.Used(), r.Reserved(), r.Quarantined(), used, reserved, quarantined)
	}
	if want := m.capacity - used - reserved - quarantined; r.Free() != want {
		t.Fatalf("Free = %d, want %d", r.Free(), want)
	}
}

func (m *rangeModel) allocated() []netip.Addr {
	var out []netip.Addr
	for a, s := range m.state {
		if s == stateAllocated {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// checkAllocated checks that r.ForEach visits exactly the model's allocated
// addresses in ascending order. It sorts nothing unless the check fails: it
// runs often, on up to thousands of addresses.
func checkAllocated(t *testing.T, what string, r *Range, m *rangeModel) {
	t.Helper()
	var n uint64
	var prev netip.Addr
	ok := true
	r.ForEach(func(a netip.Addr) {
		ok = ok && m.state[a] == stateAllocated && (n == 0 || prev.Less(a))
		prev = a
		n++
	})
	if !ok || n != m.count(stateAllocated) {
		t.Fatalf("%s = %v, want %v", what, allocated(r), m.allocated())
	}
}

// checkSnapshotRestore restores a snapshot into the range itself, which must
// change nothing, and into a fresh range, which must then hold the same
// allocated addresses.
func checkSnapshotRestore(t *testing.T, r *Range, m *rangeModel) {
	data, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(data); err != nil {
		t.Fatalf("Restore of own snapshot: %v", err)
	}
	fresh, err := NewRange(r.CIDR())
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Restore(data); err != nil {
		t.Fatalf("Restore into a fresh range: %v", err)
	}
	checkAllocated(t, "restored", fresh, m)
}
