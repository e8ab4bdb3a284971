package allocator

import "time"

// quarantine holds released offsets until a deadline. Entries expire in
// release order, which is deadline order because the hold time is fixed and
// the clock does not go backwards.
type quarantine struct {
	until map[uint64]time.Time // offset -> end of its quarantine
	queue []held               // release order; may hold stale entries
	head  int                  // queue[:head] has been processed
}

// held is one release in the queue.
type held struct {
	off   uint64
	until time.Time
}

func (q *quarantine) add(off uint64, until time.Time) {
	q.until[off] = until
	q.queue = append(q.queue, held{off, until})
}

// remove takes off out of quarantine and reports whether it was there. Its
// queue entry goes stale and is skipped when it comes up.
func (q *quarantine) remove(off uint64) bool {
	if len(q.until) == 0 {
		return false
	}
	if _, ok := q.until[off]; !ok {
		return false
	}
	delete(q.until, off)
	return true
}

// takeOldest ends the hold of the offset released longest ago and returns it.
func (q *quarantine) takeOldest() (uint64, bool) {
	for q.head < len(q.queue) {
		h := q.queue[q.head]
		q.head++
		if until, ok := q.until[h.off]; ok && until.Equal(h.until) {
			delete(q.until, h.off)
			return h.off, true
		}
	}
	return 0, false
}

// pending returns the number of queue entries not yet processed.
func (q *quarantine) pending() int { return len(q.queue) - q.head }

// expire ends the quarantine of every offset whose deadline is not after now
// and calls free for each.
func (q *quarantine) expire(now time.Time, free func(off uint64)) {
	for q.head < len(q.queue) && !q.queue[q.head].until.After(now) {
		h := q.queue[q.head]
		q.head++
		// A stale entry: the offset was allocated or reserved meanwhile, and
		// maybe released again with a later deadline.
		if until, ok := q.until[h.off]; ok && until.Equal(h.until) {
			delete(q.until, h.off)
			free(h.off)
		}
	}
	if q.head == len(q.queue) {
		q.queue, q.head = q.queue[:0], 0
	} else if q.head > 1024 && q.head > len(q.queue)/2 {
		q.queue = append(q.queue[:0], q.queue[q.head:]...)
		q.head = 0
	}
}
