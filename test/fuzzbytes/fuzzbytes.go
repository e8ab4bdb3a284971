// Package fuzzbytes reads a fuzz input a byte at a time, for the fuzz targets that build
// objects from random bytes (the datapath's rendering, the endpoints rules, the ClusterIP
// registry).
package fuzzbytes

// Reader hands out its bytes in order; past the end every byte reads as 0, so that any input,
// however short, builds something.
type Reader struct {
	data []byte
	pos  int
}

// New reads data.
func New(data []byte) *Reader { return &Reader{data: data} }

// Byte returns the next byte, or 0 past the end.
func (r *Reader) Byte() byte {
	if r.pos >= len(r.data) {
		return 0
	}
	r.pos++
	return r.data[r.pos-1]
}

// Intn returns the next byte modulo n.
func (r *Reader) Intn(n int) int { return int(r.Byte()) % n }

// Bool returns whether the next byte is odd.
func (r *Reader) Bool() bool { return r.Byte()&1 == 1 }

// Done says whether every byte has been read.
func (r *Reader) Done() bool { return r.pos >= len(r.data) }
