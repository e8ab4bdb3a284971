package allocator

import "time"

// quarantine holds released offsets until a deadline. Entries expire in
// release order, which is deadline order because the hold time is fixed and
// the clock does not go backwards.
type quarantine struct {
	until map[uint64]hold // offset -> its current hold
	queue []held          // release order; may hold stale entries
	head  int             // queue[:head] has been processed
	// releases numbers the holds: an offset released, taken and released again
	// within one clock reading has two queue entries with one deadline, and only
	// the number tells the stale one.
	releases uint64
}

// hold is one release of an offset: until when, and which release it was.
type hold struct {
	until time.Time
	n     uint64
}

// held is one release in the queue.
type held struct {
	off uint64
	hold
}

func (q *quarantine) add(off uint64, until time.Time) {
	q.releases++
	h := hold{until, q.releases}
	q.until[off] = h
	q.queue = append(q.queue, held{off, h})
}

// current says whether h is off's hold now, not a stale queue entry.
func (q *quarantine) current(h held) bool {
	cur, ok := q.until[h.off]
	return ok && cur.n == h.n
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
		if q.current(h) {
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
		// maybe released again.
		if q.current(h) {
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
