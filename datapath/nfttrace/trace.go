// Package nfttrace follows the first packet of a connection through an nftables table
// held by a knftables Fake, as the kernel would run it: the base chains of each hook on
// the packet's way in priority order, jumps and gotos, verdict maps, set lookups,
// rewrites of the destination address and port, dnat, reject and drop, the packet mark
// and masquerade. Where the kernel picks at random (numgen random mod N), the tracer
// follows every pick, so a trace lists every outcome a connection can meet.
//
// It knows the rule vocabulary the datapath writes, not all of nft: a rule it cannot
// read is an error, never skipped.
package nfttrace

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/knftables"
)

// Packet is the first packet of a new connection (conntrack state new).
type Packet struct {
	SourceIP string
	Protocol string // "tcp", "udp" or "sctp"
	DestIP   string
	DestPort int
}

func (p Packet) String() string {
	return fmt.Sprintf("%s %s -> %s", p.Protocol, p.SourceIP, net.JoinHostPort(p.DestIP, strconv.Itoa(p.DestPort)))
}

// Verdict is what becomes of a packet once every hook on its way has seen it.
type Verdict string

// Verdicts.
const (
	Accept Verdict = "accept" // it goes on (to DNAT, if any)
	Drop   Verdict = "drop"   // it vanishes: the client times out
	Reject Verdict = "reject" // the client is refused at once
)

// Outcome is one way the connection can go.
type Outcome struct {
	Verdict Verdict
	// DNAT is the "ip:port" the connection was DNATed to ("" when not DNATed).
	DNAT string
	// Masquerade tells whether the connection's source is rewritten to the node's.
	Masquerade bool
	// Rules lists the rules that matched, as "chain: rule", in order.
	Rules []string

	updates []setUpdate // dynamic-set elements the path adds (affinity)
}

// setUpdate is an "update @set { key }" a path ran.
type setUpdate struct {
	set string
	key string
}

// Tracer traces packets through one table of a knftables Fake. It keeps the content
// of dynamic sets (session affinity) that Connect adds; the Fake holds only static
// elements.
type Tracer struct {
	nft   *knftables.Fake
	local map[string]bool
	clock clock.PassiveClock

	mu      sync.Mutex
	dynamic map[string]map[string]time.Time // set -> key -> expiry (zero: never)
}

// New returns a Tracer over nft's table for a node with the given addresses (what
// "fib saddr type local" matches; a packet from one of them starts on the node, in the
// output hook). clk times dynamic-set timeouts; nil means the real clock.
func New(nft *knftables.Fake, nodeAddresses []string, clk clock.PassiveClock) *Tracer {
	if clk == nil {
		clk = clock.RealClock{}
	}
	t := &Tracer{nft: nft, local: map[string]bool{}, clock: clk, dynamic: map[string]map[string]time.Time{}}
	for _, a := range nodeAddresses {
		t.local[canonical(a)] = true
	}
	return t
}

// Trace returns every outcome of a new connection, in the order of the random picks.
func (t *Tracer) Trace(p Packet) ([]Outcome, error) {
	t.nft.RLock()
	defer t.nft.RUnlock()
	if t.nft.Table == nil {
		return nil, fmt.Errorf("trace %s: the Fake holds no table", p)
	}
	var out []Outcome
	// Depth-first over the random picks: each run follows a prefix of picks, takes pick 0
	// past it and reports how many choices each pick had.
	pending := [][]int{nil}
	for len(pending) > 0 {
		picks := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		r := &run{t: t, table: t.nft.Table, picks: picks, pkt: p, saddr: canonical(p.SourceIP), daddr: canonical(p.DestIP),
			dport: p.DestPort}
		o, err := r.packet()
		if err != nil {
			return nil, fmt.Errorf("trace %s: %w", p, err)
		}
		out = append(out, o)
		for i := len(r.arity) - 1; i >= len(picks); i-- {
			for k := r.arity[i] - 1; k >= 1; k-- {
				next := append(append([]int(nil), r.taken[:i]...), k)
				pending = append(pending, next)
			}
		}
	}
	return out, nil
}

// Connect records the dynamic-set updates of the outcome, as when the kernel took that
// path: later traces from the same client find them (until the set's timeout passes).
func (t *Tracer) Connect(o Outcome) {
	t.nft.RLock()
	defer t.nft.RUnlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range o.updates {
		var expiry time.Time
		if s := t.nft.Table.Sets[u.set]; s != nil && s.Timeout != nil {
			expiry = t.clock.Now().Add(*s.Timeout)
		}
		if t.dynamic[u.set] == nil {
			t.dynamic[u.set] = map[string]time.Time{}
		}
		t.dynamic[u.set][u.key] = expiry
	}
}

func (t *Tracer) inDynamicSet(set, key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	expiry, ok := t.dynamic[set][key]
	return ok && (expiry.IsZero() || t.clock.Now().Before(expiry))
}

// Summary is what all outcomes of a trace have in common, for assertions.
type Summary struct {
	// Verdicts are the distinct verdicts, sorted.
	Verdicts []Verdict
	// DNAT lists the distinct DNAT targets, sorted ("" left out).
	DNAT []string
	// Masquerade is true when every outcome is masqueraded, false when none is; Mixed
	// says they differ.
	Masquerade, Mixed bool
}

// Summarize folds outcomes into a Summary.
func Summarize(outcomes []Outcome) Summary {
	var s Summary
	masq := 0
	for _, o := range outcomes {
		if !slices.Contains(s.Verdicts, o.Verdict) {
			s.Verdicts = append(s.Verdicts, o.Verdict)
		}
		if o.DNAT != "" && !slices.Contains(s.DNAT, o.DNAT) {
			s.DNAT = append(s.DNAT, o.DNAT)
		}
		if o.Masquerade {
			masq++
		}
	}
	slices.Sort(s.Verdicts)
	sort.Strings(s.DNAT)
	s.Masquerade = masq > 0 && masq == len(outcomes)
	s.Mixed = masq > 0 && masq < len(outcomes)
	return s
}

// canonical returns an IP address in canonical form, or s unchanged if it is none.
func canonical(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	return s
}
