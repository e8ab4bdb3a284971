package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// netlinkElements writes elements to the kernel as one nf_tables netlink batch (which
// the kernel commits as one transaction, like `nft -f`), encoding them itself instead of
// having nft parse text; a fill, as a series of batches. A batch it cannot encode (a set
// type it does not know, a value it cannot read) goes through fallback instead.
//
// Batches go through a netlink socket in the network namespace of the calling thread, as
// nft itself would be started in it, kept open from one batch to the next (keptSocket).
type netlinkElements struct {
	family   uint8 // NFPROTO_IPV4 or NFPROTO_IPV6
	table    string
	fallback elementWriter
	fillOps  int // operations per batch of a fill: fillBatchOps
	socket   keptSocket
}

func newNetlinkElements(family knftables.Family, table string, fallback elementWriter) *netlinkElements {
	tableFamily := uint8(unix.NFPROTO_IPV4)
	if family == knftables.IPv6Family {
		tableFamily = unix.NFPROTO_IPV6
	}
	return &netlinkElements{family: tableFamily, table: table, fallback: fallback, fillOps: fillBatchOps}
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
	return w.commit(b)
}

// commit sends b and reads the kernel's answers, over the kept socket.
func (w *netlinkElements) commit(b *elementBatch) error {
	return w.socket.use(b.commitOn)
}

// elementBatch is an encoded batch waiting to be committed: its messages back to back,
// as the one sendmsg that hands them to the kernel takes them.
type elementBatch struct {
	buf   []byte
	count int // messages between the batch's begin and end, each acknowledged
}

// encode turns ops into one batch, cutting runs of element operations on one set into
// messages whose element list fits a netlink attribute (64 KiB). The messages are
// written straight into the batch's buffer: a full sync has a hundred thousand
// elements, and building netlink attributes for each through google/nftables cost more
// than the kernel's commit of them.
func (w *netlinkElements) encode(ops []loggedOp, decls map[string]*SetDecl) (*elementBatch, error) {
	return w.encodeInOrder(ops, orderBySet(ops), decls)
}

// encodeInOrder encodes the operations ops[i] for i in order as one batch.
func (w *netlinkElements) encodeInOrder(ops []loggedOp, order []int32, decls map[string]*SetDecl) (*elementBatch, error) {
	m := &batchMessages{buf: make([]byte, 0, 64*len(order)+256)}
	m.control(unix.NFNL_MSG_BATCH_BEGIN)
	if err := w.encodeMessages(m, ops, order, decls); err != nil {
		return nil, err
	}
	m.control(unix.NFNL_MSG_BATCH_END)
	m.number()
	return &elementBatch{buf: m.buf, count: m.count}, nil
}

// fillBatchOps is how many operations a fill puts in one batch: enough that the kernel's
// cost per transaction stays small beside its cost per element, few enough that the
// kernel starts early and takes each batch while the next one is encoded.
const fillBatchOps = 4096

// fill encodes ops, set by set, into batches of w.fillOps operations in the background and
// returns them to be committed one by one as they come. A fill of a node's first sync
// is most of its elements, and the kernel takes each batch while the next is encoded.
func (w *netlinkElements) fill(ops []loggedOp, decls map[string]*SetDecl) pendingFill {
	f := &netlinkFill{w: w, ops: ops, decls: decls,
		batches: make(chan encodedBatch, (len(ops)+w.fillOps-1)/w.fillOps), stop: make(chan struct{})}
	go f.encode()
	return f
}

// netlinkFill is a fill being encoded: batches receives each batch as soon as it is
// encoded, and is closed after the last one or the first that failed.
type netlinkFill struct {
	w       *netlinkElements
	ops     []loggedOp
	order   []int32 // set by encode before its first batch
	decls   map[string]*SetDecl
	batches chan encodedBatch // buffered for every batch: the encoder never waits
	stop    chan struct{}     // closed once the batches are no longer wanted
	once    sync.Once
}

// encodedBatch is the batch of the operations from order[from], or why it could not be
// encoded.
type encodedBatch struct {
	batch *elementBatch
	from  int
	err   error
}

func (f *netlinkFill) encode() {
	defer close(f.batches)
	f.order = orderBySet(f.ops)
	for from := 0; from < len(f.order); from += f.w.fillOps {
		select {
		case <-f.stop:
			return
		default:
		}
		b, err := f.w.encodeInOrder(f.ops, f.order[from:min(from+f.w.fillOps, len(f.order))], f.decls)
		f.batches <- encodedBatch{batch: b, from: from, err: err}
		if err != nil {
			return
		}
	}
}

// commit sends the batches in the calling thread (whose network namespace is the one
// written), each as its own transaction. What could not be encoded, from the first batch
// that failed on, goes through the fallback.
func (f *netlinkFill) commit(ctx context.Context) error {
	defer f.discard()
	for b := range f.batches {
		if b.err != nil {
			rest := make([]loggedOp, 0, len(f.order)-b.from)
			for _, i := range f.order[b.from:] {
				rest = append(rest, f.ops[i])
			}
			if err := f.w.fallback.write(ctx, rest, f.decls); err != nil {
				return fmt.Errorf("%w (written through nft, since netlink could not encode: %w)", err, b.err)
			}
			return nil
		}
		if err := f.w.commit(b.batch); err != nil {
			return err
		}
	}
	return nil
}

func (f *netlinkFill) discard() { f.once.Do(func() { close(f.stop) }) }

// encodeMessages appends to m the ops at the indexes order lists (grouped by set).
func (w *netlinkElements) encodeMessages(m *batchMessages, ops []loggedOp, order []int32, decls map[string]*SetDecl) error {
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
	// The open message of element operations: its set, verb, and where it and its
	// element list start in the buffer (msg < 0: none open).
	runSet, runVerb, msg, list, index := "", opAdd, -1, 0, 0
	closeRun := func() {
		if msg >= 0 {
			m.closeAttr(list)
			m.closeMessage(msg)
			msg = -1
		}
	}
	openRun := func(set string, verb opVerb) {
		typ := uint16(unix.NFT_MSG_NEWSETELEM)
		if verb == opDelete {
			typ = unix.NFT_MSG_DELSETELEM
		}
		msg = m.openMessage(typ, unix.NLM_F_CREATE, w.family)
		m.stringAttr(unix.NFTA_SET_ELEM_LIST_SET, set)
		// A set ID of 0, as google/nftables sent it before: the kernel goes by name.
		m.uint32Attr(unix.NFTA_SET_ELEM_LIST_SET_ID, 0)
		m.stringAttr(unix.NFTA_SET_ELEM_LIST_TABLE, w.table)
		list = m.openAttr(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		runSet, runVerb, index = set, verb, 0
	}
	var enc *elementEncoder
	for _, i := range order {
		op := &ops[i]
		name, key, value, isElement := op.element()
		switch op.obj.(type) {
		case *knftables.Set, *knftables.Map:
			closeRun()
			name := op.setName()
			if _, err := encoderFor(name); err != nil {
				return err
			}
			// Deleting the elements of a set without naming any flushes it.
			flush := m.openMessage(unix.NFT_MSG_DELSETELEM, 0, w.family)
			m.stringAttr(unix.NFTA_SET_ELEM_LIST_TABLE, w.table)
			m.stringAttr(unix.NFTA_SET_ELEM_LIST_SET, name)
			m.closeMessage(flush)
		default:
			if !isElement {
				return fmt.Errorf("%w: %T is not an element operation", errNoEncoding, op.obj)
			}
			if msg < 0 || runSet != name || runVerb != op.verb {
				var err error
				if enc, err = encoderFor(name); err != nil {
					return err
				}
				closeRun()
				openRun(name, op.verb)
			}
			for attempt := 0; ; attempt++ {
				at := len(m.buf)
				if err := enc.appendElement(m, index+1, key, value, op.verb == opDelete); err != nil {
					return fmt.Errorf("element %s of %s: %w", strings.Join(key, " . "), name, err)
				}
				if len(m.buf)-list <= math.MaxUint16 || attempt > 0 {
					break
				}
				// The list is full: the element starts the next message.
				m.buf = m.buf[:at]
				closeRun()
				openRun(name, op.verb)
			}
			index++
		}
	}
	closeRun()
	return nil
}

// orderBySet lists the indexes of ops set by set, each set's in their order, so that
// the runs of element operations on one set, and so the messages, are long (a Service's
// elements alternate between several maps). Only the order within a set matters in one
// transaction: a flush before the adds, a delete before an add of the same key. Indexes
// rather than reordered operations spare the copying of a hundred thousand of them.
func orderBySet(ops []loggedOp) []int32 {
	// Two passes, so that every slice is allocated once at its size. Each operation's set
	// is looked up once, and only when it is not the set of the one before (a Service's
	// endpoints come in a row).
	index := map[string]int{}
	var next []int // by set: the count of its operations, then where the next one goes
	setOf := make([]int32, len(ops))
	last, lastName := -1, ""
	for i := range ops {
		if name := ops[i].setName(); last < 0 || name != lastName {
			k, seen := index[name]
			if !seen {
				k = len(next)
				index[name] = k
				next = append(next, 0)
			}
			last, lastName = k, name
		}
		setOf[i] = int32(last)
		next[last]++
	}
	start := 0
	for k, count := range next {
		next[k] = start
		start += count
	}
	// Each index goes after those of its set that come before it.
	order := make([]int32, len(ops))
	for i, k := range setOf {
		order[next[k]] = int32(i)
		next[k]++
	}
	return order
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

// batchMessages writes nfnetlink messages and their attributes into one buffer, in the
// host's byte order as netlink wants (except where nf_tables says big endian).
type batchMessages struct {
	buf   []byte
	count int // messages other than the batch's begin and end
}

// control writes a batch's begin or end.
func (m *batchMessages) control(typ uint16) {
	start := len(m.buf)
	m.header(typ, unix.NLM_F_REQUEST)
	m.buf = append(m.buf, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	m.buf = binary.BigEndian.AppendUint16(m.buf, unix.NFNL_SUBSYS_NFTABLES)
	m.closeMessage(start)
}

// openMessage starts an nf_tables message of type typ that asks for an acknowledgement
// and returns its offset for closeMessage.
func (m *batchMessages) openMessage(typ, flags uint16, family uint8) int {
	m.count++
	start := len(m.buf)
	m.header(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	m.buf = append(m.buf, family, unix.NFNETLINK_V0, 0, 0)
	return start
}

// header appends a message header whose length is filled in later.
func (m *batchMessages) header(typ, flags uint16) {
	m.buf = binary.NativeEndian.AppendUint32(m.buf, 0)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, typ)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, flags)
	m.buf = binary.NativeEndian.AppendUint32(m.buf, 0) // sequence number: see number
	m.buf = binary.NativeEndian.AppendUint32(m.buf, 0) // port ID: the kernel's to set
}

// number gives the messages their sequence numbers, 1, 2, ... in order.
func (m *batchMessages) number() {
	for at, seq := 0, uint32(1); at < len(m.buf); seq++ {
		binary.NativeEndian.PutUint32(m.buf[at+8:], seq)
		at += int(binary.NativeEndian.Uint32(m.buf[at:]))
	}
}

func (m *batchMessages) closeMessage(start int) {
	binary.NativeEndian.PutUint32(m.buf[start:], uint32(len(m.buf)-start))
}

// uint32Attr appends an attribute holding v in network order.
func (m *batchMessages) uint32Attr(typ uint16, v uint32) {
	m.buf = binary.NativeEndian.AppendUint16(m.buf, 8)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, typ)
	m.buf = binary.BigEndian.AppendUint32(m.buf, v)
}

// stringAttr appends a NUL-terminated string attribute.
func (m *batchMessages) stringAttr(typ uint16, s string) {
	m.buf = binary.NativeEndian.AppendUint16(m.buf, uint16(4+len(s)+1))
	m.buf = binary.NativeEndian.AppendUint16(m.buf, typ)
	m.buf = append(append(m.buf, s...), 0)
	m.pad()
}

// openAttr starts a nested attribute and returns its offset for closeAttr.
func (m *batchMessages) openAttr(typ uint16) int {
	start := len(m.buf)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, 0)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, typ|unix.NLA_F_NESTED)
	return start
}

func (m *batchMessages) closeAttr(start int) {
	binary.NativeEndian.PutUint16(m.buf[start:], uint16(len(m.buf)-start))
}

func (m *batchMessages) pad() {
	for len(m.buf)%4 != 0 {
		m.buf = append(m.buf, 0)
	}
}

// commitOn sends the batch over conn and waits for the kernel's answer to each of its
// messages.
func (b *elementBatch) commitOn(conn *netlink.Conn) error {
	if err := b.sizeBuffers(conn); err != nil {
		return err
	}
	if err := b.send(conn); err != nil {
		return fmt.Errorf("netlink batch of %d messages: %w", b.count, err)
	}
	var errs error
	for range b.count {
		if _, err := conn.Receive(); err != nil {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.ENOBUFS) {
				// The kernel sends no other answer after these.
				return fmt.Errorf("netlink batch of %d messages: %w", b.count, err)
			}
			errs = errors.Join(errs, err)
		}
	}
	if errs != nil {
		return fmt.Errorf("netlink batch of %d messages: %w", b.count, errs)
	}
	return nil
}

// send hands the whole batch to the kernel in one sendmsg, which the kernel requires of
// a batch.
func (b *elementBatch) send(conn *netlink.Conn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), b.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return sendErr != unix.EAGAIN
	})
	return errors.Join(err, sendErr)
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
	send, receive := len(b.buf)+1<<20, b.count*1024+1<<20
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

// appendElement appends the element key : value to m's open element list as its
// index-th. Deletions need the key only.
func (enc *elementEncoder) appendElement(m *batchMessages, index int, key, value []string, keyOnly bool) error {
	elem := m.openAttr(uint16(index))
	data := m.openAttr(unix.NFTA_SET_ELEM_KEY)
	if err := enc.appendValue(m, enc.key, key); err != nil {
		return fmt.Errorf("key: %w", err)
	}
	m.closeAttr(data)
	switch {
	case keyOnly || (len(enc.value) == 0 && !enc.verdict):
	case enc.verdict:
		if len(value) != 1 {
			return fmt.Errorf("verdict %q", value)
		}
		v, err := parseVerdict(value[0])
		if err != nil {
			return err
		}
		data = m.openAttr(unix.NFTA_SET_ELEM_DATA)
		verdict := m.openAttr(unix.NFTA_DATA_VERDICT)
		m.uint32Attr(unix.NFTA_VERDICT_CODE, uint32(v.Kind))
		if v.Chain != "" {
			m.stringAttr(unix.NFTA_VERDICT_CHAIN, v.Chain)
		}
		m.closeAttr(verdict)
		m.closeAttr(data)
	default:
		data = m.openAttr(unix.NFTA_SET_ELEM_DATA)
		if err := enc.appendValue(m, enc.value, value); err != nil {
			return fmt.Errorf("value: %w", err)
		}
		m.closeAttr(data)
	}
	m.closeAttr(elem)
	return nil
}

// appendValue appends the fields as one NFTA_DATA_VALUE attribute.
func (enc *elementEncoder) appendValue(m *batchMessages, kinds []fieldKind, values []string) error {
	start := len(m.buf)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, 0)
	m.buf = binary.NativeEndian.AppendUint16(m.buf, unix.NFTA_DATA_VALUE)
	var err error
	if m.buf, err = appendFields(m.buf, kinds, values); err != nil {
		return err
	}
	binary.NativeEndian.PutUint16(m.buf[start:], uint16(len(m.buf)-start))
	m.pad()
	return nil
}

// appendFields appends the encoding of the fields to dst. The fields of a concatenation
// each take a whole number of 4-byte registers.
func appendFields(dst []byte, kinds []fieldKind, values []string) ([]byte, error) {
	if len(values) != len(kinds) {
		return nil, fmt.Errorf("%d fields, want %d", len(values), len(kinds))
	}
	start := len(dst)
	for i, kind := range kinds {
		var err error
		if dst, err = appendField(dst, kind, values[i]); err != nil {
			return nil, err
		}
		if len(kinds) > 1 {
			for (len(dst)-start)%4 != 0 {
				dst = append(dst, 0)
			}
		}
	}
	return dst, nil
}

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

func parseVerdict(s string) (expr.Verdict, error) {
	word, chain, _ := strings.Cut(s, " ")
	kind, ok := verdictKinds[word]
	if !ok || (chain != "") != (kind == expr.VerdictGoto || kind == expr.VerdictJump) {
		return expr.Verdict{}, fmt.Errorf("verdict %q", s)
	}
	return expr.Verdict{Kind: kind, Chain: chain}, nil
}
