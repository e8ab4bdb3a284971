package allocator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"net/netip"
	"slices"
)

// Snapshot format, version 1:
//
//	"KCIP" | version byte | uvarint len(cidr) | cidr text | records | CRC-32 (IEEE, little endian) of all before
//
// Each record covers a run of consecutive level-0 words (64 offsets each):
//
//	uvarint(words skipped since the end of the previous record) | uvarint(n<<1 | full) | literal words
//
// A full run (full == 1) stands for n all-ones words and carries no payload;
// otherwise n little-endian uint64 words follow. A full /12 snapshot is a few
// dozen bytes; the worst case is 8 bytes per 64 addresses plus a little.
const (
	snapshotMagic   = "KCIP"
	snapshotVersion = 1
)

// errCorrupt is wrapped by Restore for data that cannot be decoded.
var errCorrupt = errors.New("corrupt allocator snapshot")

// Snapshot returns the allocated addresses (not reserved or quarantined ones)
// and the range's CIDR in a compact binary form for Restore.
func (r *Range) Snapshot() ([]byte, error) {
	r.mu.Lock()
	words := r.allocatedWords()
	r.mu.Unlock()

	cidr := r.cidr.String()
	out := append([]byte(snapshotMagic), snapshotVersion)
	out = binary.AppendUvarint(out, uint64(len(cidr)))
	out = append(out, cidr...)
	var next uint64 // index of the first word after the previous record
	for i := 0; i < len(words); {
		full := words[i].word == allOnes
		j := i + 1
		for j < len(words) && words[j].index == words[j-1].index+1 && (words[j].word == allOnes) == full {
			j++
		}
		out = binary.AppendUvarint(out, words[i].index-next)
		n := uint64(j - i)
		if full {
			out = binary.AppendUvarint(out, n<<1|1)
		} else {
			out = binary.AppendUvarint(out, n<<1)
			for _, iw := range words[i:j] {
				out = binary.LittleEndian.AppendUint64(out, iw.word)
			}
		}
		next = words[j-1].index + 1
		i = j
	}
	return binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(out)), nil
}

// Restore replaces the allocated addresses with those in data, a Snapshot of
// a range with the same CIDR. Reservations stay; a quarantined address that
// data lists becomes allocated, the others stay in quarantine. On error
// (corrupt data, another CIDR, or an allocated address that is reserved here,
// which wraps ErrReserved) the Range is unchanged.
func (r *Range) Restore(data []byte) error {
	words, err := r.decodeSnapshot(data)
	if err != nil {
		return fmt.Errorf("restore %s: %w", r.cidr, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for off := range r.reserved {
		if i, ok := searchWord(words, off/wordBits); ok && words[i].word&(1<<(off%wordBits)) != 0 {
			return fmt.Errorf("restore %s: the snapshot allocates %s, but %w; unreserve it first",
				r.cidr, r.addrAt(off), ErrReserved)
		}
	}
	var used uint64
	for _, iw := range words {
		used += uint64(bits.OnesCount64(iw.word))
	}
	r.occupied.load(words)
	r.used = used
	for off := range r.reserved {
		r.occupied.set(off)
	}
	for off := range r.quarantine.until {
		if !r.occupied.set(off) {
			delete(r.quarantine.until, off) // allocated in the snapshot
		}
	}
	for off := range r.cooling.until {
		if !r.occupied.set(off) {
			delete(r.cooling.until, off) // allocated in the snapshot
		}
	}
	return nil
}

// decodeSnapshot checks data and returns its words in ascending order.
func (r *Range) decodeSnapshot(data []byte) ([]indexedWord, error) {
	const trailer = 4
	if len(data) < len(snapshotMagic)+1+trailer || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not an allocator snapshot; take it with Range.Snapshot", errCorrupt)
	}
	body := data[:len(data)-trailer]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, fmt.Errorf("%w: checksum mismatch; the data was truncated or altered", errCorrupt)
	}
	if v := body[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads version %d", errCorrupt, v, snapshotVersion)
	}
	rest := body[len(snapshotMagic)+1:]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	n, ok := uvarint()
	if !ok || n > uint64(len(rest)) {
		return nil, fmt.Errorf("%w: bad CIDR field", errCorrupt)
	}
	cidr, err := netip.ParsePrefix(string(rest[:n]))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if cidr != r.cidr {
		return nil, fmt.Errorf("snapshot is of range %s, not %s; restore it into a Range over %s", cidr, r.cidr, cidr)
	}
	rest = rest[n:]

	// maxGrow caps preallocation, so that a forged count cannot demand a huge
	// allocation before the payload is checked.
	const maxGrow = 1 << 16
	total := r.occupied.levels[0].words
	var words []indexedWord
	var next uint64
	for len(rest) > 0 {
		skip, ok1 := uvarint()
		head, ok2 := uvarint()
		count := head >> 1
		if !ok1 || !ok2 || count == 0 || skip > total-next || count > total-next-skip {
			return nil, fmt.Errorf("%w: bad record header", errCorrupt)
		}
		index := next + skip
		if head&1 == 0 && count > uint64(len(rest))/8 {
			return nil, fmt.Errorf("%w: truncated record", errCorrupt)
		}
		words = slices.Grow(words, int(min(count, maxGrow)))
		for k := range count {
			w := allOnes
			if head&1 == 0 {
				w = binary.LittleEndian.Uint64(rest[8*k:])
			}
			if w != 0 {
				words = append(words, indexedWord{index + k, w})
			}
		}
		if head&1 == 0 {
			rest = rest[8*count:]
		}
		next = index + count
	}
	// Offsets at or beyond Capacity are the broadcast address or do not exist.
	if len(words) > 0 {
		last := words[len(words)-1]
		first := last.index * wordBits
		if lastBit := first + uint64(63-bits.LeadingZeros64(last.word)); lastBit >= r.capacity {
			return nil, fmt.Errorf("%w: offset %d is beyond the range's %d assignable addresses", errCorrupt, lastBit, r.capacity)
		}
	}
	return words, nil
}
