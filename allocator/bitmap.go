package allocator

import (
	"cmp"
	"math/bits"
	"slices"
)

// wordBits is the number of bits in one bitmap word; every level of the
// bitmap summarises 64 words of the level below in one word.
const wordBits = 64

// levelShift is log2(wordBits): each level up divides the index by 64.
const levelShift = 6

// allOnes is a word in which every bit is set.
const allOnes = ^uint64(0)

// denseLimitLog2 is the largest bit space (as log2) kept entirely in slices:
// 2^24 bits is 2 MiB, which covers IPv4 ranges from a /8 down.
const denseLimitLog2 = 24

// denseLevelWords is the largest level (in words) kept in a slice when the
// bitmap as a whole is sparse; the small upper levels of a /64 stay dense.
const denseLevelWords = 1 << 12

// level is one level of a hierarchical bitmap. Words live in a slice when the
// level is small enough, otherwise in a map that only holds non-zero words, so
// memory follows what is set rather than the size of the bit space.
type level struct {
	dense  []uint64
	sparse map[uint64]uint64
	words  uint64 // number of words at this level
}

func (l *level) word(i uint64) uint64 {
	if l.dense != nil {
		return l.dense[i]
	}
	return l.sparse[i]
}

func (l *level) setWord(i, w uint64) {
	if l.dense != nil {
		l.dense[i] = w
		return
	}
	if w == 0 {
		delete(l.sparse, i)
		return
	}
	l.sparse[i] = w
}

// bitmap is a hierarchical bitmap over a bit space of 2^log2 bits. Level 0
// holds one bit per address (set = occupied); bit j of level L>0 is set when
// word j of level L-1 is full. Finding a clear bit therefore costs one word
// per level (at most 11 levels for 2^64 bits), however full the bitmap is.
//
// Bits at or beyond size are padding: they are set when the bitmap is built
// and never cleared, so searches never return them.
type bitmap struct {
	levels []level
	size   uint64 // number of usable bits; bits >= size are padding
}

// newBitmap returns an empty bitmap with size usable bits in a bit space of
// 2^log2 bits (size <= 2^log2, log2 <= 64).
func newBitmap(log2 uint, size uint64) *bitmap {
	b := &bitmap{size: size}
	for l := 0; ; l++ {
		shift := levelShift * uint(l+1)
		words := uint64(1)
		if log2 > shift {
			words = 1 << (log2 - shift)
		}
		lv := level{words: words}
		if log2 <= denseLimitLog2 || words <= denseLevelWords {
			lv.dense = make([]uint64, words)
		} else {
			lv.sparse = make(map[uint64]uint64)
		}
		b.levels = append(b.levels, lv)
		if words == 1 {
			break
		}
	}
	b.setPadding()
	return b
}

// setPadding sets the bits that do not stand for a usable address (level 0)
// or for an existing word of the level below (levels above), so that searches
// treat them as occupied.
func (b *bitmap) setPadding() {
	for l := range b.levels {
		// last is computed without overflow: a /64 has 2^58 level-0 words.
		last := (b.levels[l].words-1)*wordBits + wordBits - 1
		start := b.size
		if l > 0 {
			start = b.levels[l-1].words
		}
		for i := start; i <= last; i++ {
			b.setAt(l, i)
			if i == last {
				break // i++ would wrap around for the last bit of a /64
			}
		}
	}
}

// get reports whether bit i is set.
func (b *bitmap) get(i uint64) bool {
	return b.levels[0].word(i/wordBits)&(1<<(i%wordBits)) != 0
}

// set sets bit i and reports whether it was clear before.
func (b *bitmap) set(i uint64) bool {
	if b.get(i) {
		return false
	}
	b.setAt(0, i)
	return true
}

// setAt sets bit i of level l and marks the word full in the level above
// when it becomes full.
func (b *bitmap) setAt(l int, i uint64) {
	for ; l < len(b.levels); l++ {
		lv := &b.levels[l]
		wi := i / wordBits
		w := lv.word(wi) | 1<<(i%wordBits)
		lv.setWord(wi, w)
		if w != allOnes {
			return
		}
		i = wi
	}
}

// clear clears bit i and reports whether it was set before.
func (b *bitmap) clear(i uint64) bool {
	if !b.get(i) {
		return false
	}
	for l := 0; l < len(b.levels); l++ {
		lv := &b.levels[l]
		wi := i / wordBits
		old := lv.word(wi)
		lv.setWord(wi, old&^(1<<(i%wordBits)))
		if old != allOnes {
			break // the level above never marked this word full
		}
		i = wi
	}
	return true
}

// nextClear returns the first clear bit at or after from, or false when all
// bits from there to the end are set.
func (b *bitmap) nextClear(from uint64) (uint64, bool) {
	if from >= b.size {
		return 0, false
	}
	i := from
	for l := 0; l < len(b.levels); l++ {
		lv := &b.levels[l]
		wi := i / wordBits
		if wi >= lv.words {
			return 0, false
		}
		w := lv.word(wi) | (uint64(1)<<(i%wordBits) - 1)
		if w != allOnes {
			j := wi*wordBits + uint64(bits.TrailingZeros64(^w))
			for l > 0 {
				l--
				j = j*wordBits + uint64(bits.TrailingZeros64(^b.levels[l].word(j)))
			}
			return j, true
		}
		i = wi + 1
	}
	return 0, false
}

// indexedWord is one non-zero level-0 word and its index.
type indexedWord struct {
	index uint64
	word  uint64
}

// setWords returns the non-zero level-0 words in ascending index order, with
// padding bits removed.
func (b *bitmap) setWords() []indexedWord {
	lv := &b.levels[0]
	var out []indexedWord
	if lv.dense != nil {
		for i, w := range lv.dense {
			if w != 0 {
				out = append(out, indexedWord{uint64(i), w})
			}
		}
	} else {
		out = make([]indexedWord, 0, len(lv.sparse))
		for i, w := range lv.sparse {
			out = append(out, indexedWord{i, w})
		}
		slices.SortFunc(out, func(a, c indexedWord) int { return cmp.Compare(a.index, c.index) })
	}
	// Strip padding from the last word(s).
	for len(out) > 0 {
		last := &out[len(out)-1]
		first := last.index * wordBits
		if first >= b.size {
			out = out[:len(out)-1]
			continue
		}
		if b.size-first >= wordBits { // no padding; written so a /64 does not overflow
			break
		}
		last.word &= uint64(1)<<(b.size-first) - 1
		if last.word == 0 {
			out = out[:len(out)-1]
			continue
		}
		break
	}
	return out
}

// load replaces the contents of b with the given level-0 words (which must
// not contain padding bits), rebuilding the summary levels.
func (b *bitmap) load(words []indexedWord) {
	for l := range b.levels {
		lv := &b.levels[l]
		if lv.dense != nil {
			clear(lv.dense)
		} else {
			clear(lv.sparse)
		}
	}
	lv0 := &b.levels[0]
	for _, iw := range words {
		lv0.setWord(iw.index, iw.word)
	}
	b.setPadding()
	// Summaries: a full word at level l sets its bit at level l+1. Padding is
	// already propagated, so only mark words that the load made full.
	for l := 0; l+1 < len(b.levels); l++ {
		lv := &b.levels[l]
		up := &b.levels[l+1]
		mark := func(i, w uint64) {
			if w == allOnes {
				up.setWord(i/wordBits, up.word(i/wordBits)|1<<(i%wordBits))
			}
		}
		if lv.dense != nil {
			for i, w := range lv.dense {
				mark(uint64(i), w)
			}
		} else {
			for i, w := range lv.sparse {
				mark(i, w)
			}
		}
	}
}

// searchWord returns the position of the word with index wi in words, which
// is sorted by index, and whether it is there.
func searchWord(words []indexedWord, wi uint64) (int, bool) {
	return slices.BinarySearchFunc(words, wi, func(iw indexedWord, wi uint64) int {
		return cmp.Compare(iw.index, wi)
	})
}
