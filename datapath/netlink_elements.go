package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// netlinkElements writes elements to the kernel as one nf_tables netlink batch (which
// the kernel commits as one transaction, like `nft -f`), encoding them itself instead of
// having nft parse text. A batch it cannot encode (a set type it does not know, a value
// it cannot read) goes through fallback instead.
//
// The netlink socket is opened for each batch in the network namespace of the calling
// thread, as nft itself would be started in it.
type netlinkElements struct {
	family   nftables.TableFamily
	table    string
	fallback elementWriter
}

func newNetlinkElements(family knftables.Family, table string, fallback elementWriter) *netlinkElements {
	tableFamily := nftables.TableFamilyIPv4
	if family == knftables.IPv6Family {
		tableFamily = nftables.TableFamilyIPv6
	}
	return &netlinkElements{family: tableFamily, table: table, fallback: fallback}
}

// errNoEncoding says that a set's type is outside what elementEncoder knows.
var errNoEncoding = errors.New("no netlink encoding")

func (w *netlinkElements) write(ctx context.Context, ops []loggedOp, decls map[string]*SetDecl) error {
	if len(ops) == 0 {
		return nil
	}
	b, err := w.encode(ops, decls)
	if err != nil {
		// Whatever this encoder does not know, nft does, or says clearly why not.
		if ferr := w.fallback.write(ctx, ops, decls); ferr != nil {
			return fmt.Errorf("%w (written through nft, since netlink could not encode: %w)", ferr, err)
		}
		return nil
	}
	return b.commit()
}

// elementBatch is an encoded batch waiting to be committed.
type elementBatch struct {
	conn  *nftables.Conn
	size  int // bytes of the messages, roughly
	count int // messages
}

// encode turns ops into one batch, cutting runs of element operations on one set into
// messages that fit a netlink attribute (64 KiB).
func (w *netlinkElements) encode(ops []loggedOp, decls map[string]*SetDecl) (*elementBatch, error) {
	table := &nftables.Table{Name: w.table, Family: w.family}
	encoders := map[string]*elementEncoder{}
	encoderFor := func(name string) (*elementEncoder, error) {
		if enc := encoders[name]; enc != nil {
			return enc, nil
		}
		decl := decls[name]
		if decl == nil {
			return nil, fmt.Errorf("%w: set %s is not declared", errNoEncoding, name)
		}
		enc, err := newElementEncoder(decl)
		if err != nil {
			return nil, err
		}
		encoders[name] = enc
		return enc, nil
	}
	// The messages go to a connection whose socket opens at commit, sized then.
	batch := &elementBatch{}
	conn, err := nftables.New(nftables.WithSockOptions(batch.sizeBuffers))
	if err != nil {
		return nil, fmt.Errorf("open netlink connection: %w", err)
	}
	batch.conn = conn
	run := make([]nftables.SetElement, 0, 1024)
	var runSet *nftables.Set
	var runVerb opVerb
	runBytes := 0
	flushRun := func() error {
		if len(run) == 0 {
			return nil
		}
		var err error
		if runVerb == opDelete {
			err = conn.SetDeleteElements(runSet, run)
		} else {
			err = conn.SetAddElements(runSet, run)
		}
		batch.count++
		batch.size += runBytes + 64
		// The connection holds the encoded message; run's array can be used again.
		run, runBytes = run[:0], 0
		return err
	}
	for _, op := range groupBySet(ops) {
		name, key, value, isElement := op.element()
		switch op.obj.(type) {
		case *knftables.Set, *knftables.Map:
			if err := flushRun(); err != nil {
				return nil, err
			}
			name := op.setName()
			if _, err := encoderFor(name); err != nil {
				return nil, err
			}
			conn.FlushSet(&nftables.Set{Table: table, Name: name})
			batch.count++
			batch.size += 64
		default:
			if !isElement {
				return nil, fmt.Errorf("%w: %T is not an element operation", errNoEncoding, op.obj)
			}
			enc, err := encoderFor(name)
			if err != nil {
				return nil, err
			}
			elem, n, err := enc.element(key, value, op.verb == opDelete)
			if err != nil {
				return nil, fmt.Errorf("element %s of %s: %w", strings.Join(key, " . "), name, err)
			}
			if runSet == nil || runSet.Name != name || runVerb != op.verb || runBytes+n > maxElementListBytes {
				if err := flushRun(); err != nil {
					return nil, err
				}
				runSet, runVerb = &nftables.Set{Table: table, Name: name}, op.verb
			}
			run = append(run, elem)
			runBytes += n
		}
	}
	if err := flushRun(); err != nil {
		return nil, err
	}
	return batch, nil
}

// groupBySet orders ops set by set, each set's in their order, so that the runs of
// element operations on one set, and so the messages, are long (a Service's elements
// alternate between several maps). Only the order within a set matters in one
// transaction: a flush before the adds, a delete before an add of the same key.
func groupBySet(ops []loggedOp) []loggedOp {
	// Two passes, so that every slice is allocated once at its size: a full sync has
	// a hundred thousand operations.
	start := map[string]int{}
	var names []string
	for _, op := range ops {
		name := op.setName()
		if _, seen := start[name]; !seen {
			names = append(names, name)
		}
		start[name]++
	}
	next := 0
	for _, name := range names {
		count := start[name]
		start[name] = next
		next += count
	}
	out := make([]loggedOp, len(ops))
	for _, op := range ops {
		name := op.setName()
		out[start[name]] = op
		start[name]++
	}
	return out
}

// opSetName names the set or map an element operation works on.
func opSetName(obj knftables.Object) string {
	switch obj := obj.(type) {
	case *knftables.Element:
		if obj.Map != "" {
			return obj.Map
		}
		return obj.Set
	case *knftables.Map:
		return obj.Name
	case *knftables.Set:
		return obj.Name
	}
	return ""
}

// maxElementListBytes bounds the encoded elements of one message: the list is one
// netlink attribute, whose length field has 16 bits.
const maxElementListBytes = 60000

// commit sends the batch and waits for the kernel's answer.
func (b *elementBatch) commit() error {
	if err := b.conn.Flush(); err != nil {
		return fmt.Errorf("netlink batch of %d messages: %w", b.count, err)
	}
	return nil
}

// sizeBuffers makes the socket's buffers hold the whole batch (the kernel takes it in one
// sendmsg) and one acknowledgement per message, as nft does for large transactions. The
// forced sizes need CAP_NET_ADMIN, which writing nftables needs anyway; without it the
// plain sizes are tried, capped by net.core.[rw]mem_max.
func (b *elementBatch) sizeBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	send, receive := b.size+1<<20, b.count*1024+1<<20
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain, size int }{
			{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, send},
			{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, receive},
		} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, o.size) == nil {
				continue
			}
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, o.size); err != nil {
				sockErr = errors.Join(sockErr, fmt.Errorf("size netlink socket buffer: %w", err))
			}
		}
	})
	return errors.Join(err, sockErr)
}

// fieldKind is one component of a set's key or a map's value.
type fieldKind int

const (
	ipv4Field fieldKind = iota
	ipv6Field
	protoField   // inet_proto: 1 byte
	serviceField // inet_service: 2 bytes, network order
	numgenField  // numgen's result: 4 bytes, host order (what the expression writes)
)

// elementEncoder encodes the elements of one set or map into the kernel's layout: the
// fields of a concatenation each take a whole number of 4-byte registers.
type elementEncoder struct {
	key, value []fieldKind
	verdict    bool // the value is a verdict
	// buf is where encoded keys and values are carved from: one allocation per chunk
	// rather than several per element (a full sync encodes a million of them). Each chunk
	// is garbage once the netlink library has copied its elements into a message.
	buf []byte
}

func newElementEncoder(decl *SetDecl) (*elementEncoder, error) {
	for _, f := range decl.Flags {
		if f == knftables.IntervalFlag || f == knftables.TimeoutFlag || f == knftables.DynamicFlag {
			return nil, fmt.Errorf("%w: set %s has flag %s", errNoEncoding, decl.Name, f)
		}
	}
	typ, parse := decl.Type, typeField
	if typ == "" {
		typ, parse = decl.TypeOf, typeofField
	}
	keyPart, valuePart, isMap := strings.Cut(typ, ":")
	if isMap != decl.Map {
		return nil, fmt.Errorf("%w: set %s: type %q", errNoEncoding, decl.Name, typ)
	}
	enc := &elementEncoder{}
	var err error
	if enc.key, err = parseFields(keyPart, parse); err != nil {
		return nil, fmt.Errorf("%w: set %s: %w", errNoEncoding, decl.Name, err)
	}
	if isMap {
		if strings.TrimSpace(valuePart) == "verdict" {
			enc.verdict = true
		} else if enc.value, err = parseFields(valuePart, parse); err != nil {
			return nil, fmt.Errorf("%w: map %s: %w", errNoEncoding, decl.Name, err)
		}
	}
	return enc, nil
}

func parseFields(s string, parse func(string) (fieldKind, bool)) ([]fieldKind, error) {
	var out []fieldKind
	for _, part := range strings.Split(s, " . ") {
		kind, ok := parse(strings.TrimSpace(part))
		if !ok {
			return nil, fmt.Errorf("unknown field %q", part)
		}
		out = append(out, kind)
	}
	return out, nil
}

// typeField reads a field of a set's "type".
func typeField(s string) (fieldKind, bool) {
	switch s {
	case "ipv4_addr":
		return ipv4Field, true
	case "ipv6_addr":
		return ipv6Field, true
	case "inet_proto":
		return protoField, true
	case "inet_service":
		return serviceField, true
	}
	return 0, false
}

// typeofField reads a field of a set's "typeof".
func typeofField(s string) (fieldKind, bool) {
	words := strings.Fields(s)
	switch {
	case len(words) == 2 && (words[0] == "ip" || words[0] == "ip6") && (words[1] == "saddr" || words[1] == "daddr"):
		if words[0] == "ip" {
			return ipv4Field, true
		}
		return ipv6Field, true
	case len(words) == 2 && (words[1] == "dport" || words[1] == "sport") &&
		(words[0] == "tcp" || words[0] == "udp" || words[0] == "sctp" || words[0] == "th"):
		return serviceField, true
	case s == "meta l4proto":
		return protoField, true
	case len(words) >= 1 && words[0] == "numgen":
		return numgenField, true
	}
	return 0, false
}

// element encodes the element key : value into enc's buffer; n is roughly its size in
// the message. Deletions need the key only.
func (enc *elementEncoder) element(key, value []string, keyOnly bool) (nftables.SetElement, int, error) {
	var out nftables.SetElement
	var err error
	if out.Key, err = enc.encodeFields(enc.key, key); err != nil {
		return out, 0, fmt.Errorf("key: %w", err)
	}
	n := len(out.Key) + 24
	if keyOnly || (len(enc.value) == 0 && !enc.verdict) {
		return out, n, nil
	}
	if enc.verdict {
		if len(value) != 1 {
			return out, 0, fmt.Errorf("verdict %q", value)
		}
		if out.VerdictData, err = parseVerdict(value[0]); err != nil {
			return out, 0, err
		}
		return out, n + len(out.VerdictData.Chain) + 32, nil
	}
	if out.Val, err = enc.encodeFields(enc.value, value); err != nil {
		return out, 0, fmt.Errorf("value: %w", err)
	}
	return out, n + len(out.Val) + 12, nil
}

// encodeFields appends the fields to enc's buffer and returns them. The fields of a
// concatenation each take a whole number of 4-byte registers.
func (enc *elementEncoder) encodeFields(kinds []fieldKind, values []string) ([]byte, error) {
	if len(values) != len(kinds) {
		return nil, fmt.Errorf("%d fields, want %d", len(values), len(kinds))
	}
	if cap(enc.buf)-len(enc.buf) < maxFieldsBytes {
		// Chunks grow from small, for the few elements of an incremental sync.
		enc.buf = make([]byte, 0, min(max(2*cap(enc.buf), 4*maxFieldsBytes), maxEncodeChunkBytes))
	}
	start := len(enc.buf)
	for i, kind := range kinds {
		var err error
		if enc.buf, err = appendField(enc.buf, kind, values[i]); err != nil {
			return nil, err
		}
		if len(kinds) > 1 {
			for (len(enc.buf)-start)%4 != 0 {
				enc.buf = append(enc.buf, 0)
			}
		}
	}
	return enc.buf[start:len(enc.buf):len(enc.buf)], nil
}

// maxFieldsBytes bounds the encoding of a key or a value (five IPv6 addresses), so that a
// chunk with that much room left holds it without growing; were it to grow, the fields
// carved before would still keep the old array.
const (
	maxFieldsBytes      = 80
	maxEncodeChunkBytes = 32 << 10
)

// protocolNumbers are the protocol names the rules use.
var protocolNumbers = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// appendField appends the encoding of one field to dst.
func appendField(dst []byte, kind fieldKind, s string) ([]byte, error) {
	switch kind {
	case ipv4Field, ipv6Field:
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" || addr.Is4() != (kind == ipv4Field) || addr.Is4In6() {
			return nil, fmt.Errorf("address %q does not fit the set's family", s)
		}
		if kind == ipv4Field {
			a := addr.As4()
			return append(dst, a[:]...), nil
		}
		a := addr.As16()
		return append(dst, a[:]...), nil
	case protoField:
		if n, ok := protocolNumbers[s]; ok {
			return append(dst, n), nil
		}
		n, err := strconv.ParseUint(s, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("protocol %q", s)
		}
		return append(dst, byte(n)), nil
	case serviceField:
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q", s)
		}
		return binary.BigEndian.AppendUint16(dst, uint16(n)), nil
	case numgenField:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("integer %q", s)
		}
		return binary.NativeEndian.AppendUint32(dst, uint32(n)), nil
	}
	return nil, fmt.Errorf("field kind %d", kind)
}

// verdictKinds are the verdicts of verdict maps, by their nft keyword.
var verdictKinds = map[string]expr.VerdictKind{"goto": expr.VerdictGoto, "jump": expr.VerdictJump,
	"drop": expr.VerdictDrop, "accept": expr.VerdictAccept, "return": expr.VerdictReturn, "continue": expr.VerdictContinue}

func parseVerdict(s string) (*expr.Verdict, error) {
	word, chain, _ := strings.Cut(s, " ")
	kind, ok := verdictKinds[word]
	if !ok || (chain != "") != (kind == expr.VerdictGoto || kind == expr.VerdictJump) {
		return nil, fmt.Errorf("verdict %q", s)
	}
	return &expr.Verdict{Kind: kind, Chain: chain}, nil
}
