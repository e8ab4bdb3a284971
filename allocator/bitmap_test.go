package allocator

import (
	"math/rand/v2"
	"testing"
)

// naiveNextClear is the obvious linear scan nextClear must agree with.
func naiveNextClear(set map[uint64]bool, from, size uint64) (uint64, bool) {
	for i := from; i < size; i++ {
		if !set[i] {
			return i, true
		}
	}
	return 0, false
}

func TestBitmapNextClearMatchesLinearScan(t *testing.T) {
	tests := []struct {
		name string
		log2 uint
		size uint64
		fill float64
	}{
		{name: "single word, 2 usable bits", log2: 2, size: 2, fill: 0.5},
		{name: "one level exactly", log2: 6, size: 63, fill: 0.9},
		{name: "two levels, sparse fill", log2: 12, size: 4094, fill: 0.1},
		{name: "three levels, nearly full", log2: 14, size: 16382, fill: 0.999},
		{name: "odd level count", log2: 13, size: 8190, fill: 0.7},
		{name: "sparse storage", log2: 30, size: 1<<30 - 1, fill: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			b := newBitmap(tt.log2, tt.size)
			set := map[uint64]bool{}
			probe := min(tt.size, 1<<14)
			for i := range probe {
				if rng.Float64() < tt.fill {
					b.set(i)
					set[i] = true
				}
			}
			// Clear a few again so summaries go from full back to not full.
			for range 20 {
				i := rng.Uint64N(probe)
				if b.clear(i) != set[i] {
					t.Fatalf("clear(%d) disagrees with model", i)
				}
				delete(set, i)
			}
			for range 2000 {
				from := rng.Uint64N(probe)
				got, gotOK := b.nextClear(from)
				want, wantOK := naiveNextClear(set, from, tt.size)
				if got != want || gotOK != wantOK {
					t.Fatalf("nextClear(%d) = %d, %v; want %d, %v", from, got, gotOK, want, wantOK)
				}
			}
		})
	}
}

func TestBitmapFullAndPadding(t *testing.T) {
	tests := []struct {
		name string
		log2 uint
		size uint64
	}{
		{name: "IPv4 /30", log2: 2, size: 2},
		{name: "IPv4 /31 has no usable bit", log2: 1, size: 0},
		{name: "IPv4 /20", log2: 12, size: 4094},
		{name: "IPv6 /64", log2: 64, size: 1<<64 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBitmap(tt.log2, tt.size)
			if tt.size > 0 && tt.size < 1<<20 {
				for i := range tt.size {
					if !b.set(i) {
						t.Fatalf("set(%d) on an empty bit returned false", i)
					}
				}
			}
			if tt.size < 1<<20 {
				if i, ok := b.nextClear(0); ok {
					t.Fatalf("nextClear(0) on a full bitmap = %d", i)
				}
			}
			if tt.size == 0 {
				return
			}
			last := tt.size - 1
			b.clear(last)
			if i, ok := b.nextClear(0); !ok || (tt.size < 1<<20 && i != last) {
				t.Fatalf("nextClear(0) = %d, %v; want %d", i, ok, last)
			}
			if _, ok := b.nextClear(tt.size); ok {
				t.Fatal("nextClear past the end found padding")
			}
			words := b.setWords()
			for _, w := range words {
				if w.index*wordBits+wordBits > tt.size && w.word>>(tt.size-w.index*wordBits) != 0 {
					t.Fatalf("setWords leaked padding in word %d: %#x", w.index, w.word)
				}
			}
		})
	}
}

// bitmapWords counts the words a bitmap stores: dense slices in full, sparse
// levels by their non-zero words.
func bitmapWords(b *bitmap) (dense, sparse int) {
	for _, lv := range b.levels {
		dense += len(lv.dense)
		sparse += len(lv.sparse)
	}
	return dense, sparse
}

func TestBitmapStorageSize(t *testing.T) {
	tests := []struct {
		name       string
		cidr       string
		allocate   int
		maxDense   int // words
		maxSparse  int // words
		wantSparse bool
	}{
		// 2^20 bits = 16384 words, plus 256 + 4 + 1 summary words: 130 KiB.
		{name: "/12 is dense and under 160 KiB", cidr: "10.96.0.0/12", allocate: 1000, maxDense: 160 << 10 / 8},
		// Level 0 and 1 are maps; only words with an allocated bit exist.
		{name: "/64 holds one word per allocation", cidr: "fd00::/64", allocate: 1000, maxDense: 2 * denseLevelWords, maxSparse: 1000 + 2, wantSparse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRange(t, tt.cidr)
			for range tt.allocate {
				if _, err := r.AllocateNext(); err != nil {
					t.Fatal(err)
				}
			}
			dense, sparse := bitmapWords(r.occupied)
			if dense > tt.maxDense || sparse > tt.maxSparse || (sparse > 0) != tt.wantSparse {
				t.Errorf("dense = %d words, sparse = %d words; want at most %d and %d", dense, sparse, tt.maxDense, tt.maxSparse)
			}
		})
	}
}
