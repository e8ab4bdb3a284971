package datapath

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// TestElementEncoder holds the batch netlinkElements encodes for one element equal to
// what google/nftables, which wrote these batches before, encodes for the same key and
// value bytes.
func TestElementEncoder(t *testing.T) {
	index1 := binary.NativeEndian.AppendUint32(nil, 1)
	for _, tc := range []struct {
		name    string
		decl    SetDecl
		elem    knftables.Element
		key     []byte
		val     []byte
		verdict *expr.Verdict
		encErr  bool // the set's type has no encoding
		elemErr bool // the element does not fit the type
	}{{
		name: "endpoint map: fields padded to 4 bytes, index in host order",
		decl: SetDecl{Name: "m", Map: true, TypeOf: "ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport"},
		elem: knftables.Element{Key: []string{"10.96.0.1", "80", "1"}, Value: []string{"10.244.0.5", "8080"}},
		key:  append([]byte{10, 96, 0, 1, 0, 80, 0, 0}, index1...),
		val:  []byte{10, 244, 0, 5, 0x1f, 0x90, 0, 0},
	}, {
		name: "nodeport endpoint map over IPv6",
		decl: SetDecl{Name: "m", Map: true, TypeOf: "udp dport . numgen random mod 1 : ip6 daddr . udp dport"},
		elem: knftables.Element{Key: []string{"30000", "1"}, Value: []string{"fd00::1", "53"}},
		key:  append([]byte{0x75, 0x30, 0, 0}, index1...),
		val:  []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53, 0, 0},
	}, {
		name:    "dispatch map: verdict",
		decl:    SetDecl{Name: "m", Map: true, Type: "ipv4_addr . inet_proto . inet_service : verdict"},
		elem:    knftables.Element{Key: []string{"10.96.0.1", "sctp", "443"}, Value: []string{"goto dnat-mod-3"}},
		key:     []byte{10, 96, 0, 1, 132, 0, 0, 0, 1, 0xbb, 0, 0},
		verdict: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "dnat-mod-3"},
	}, {
		name:    "verdict without chain",
		decl:    SetDecl{Name: "m", Map: true, Type: "inet_proto . inet_service : verdict"},
		elem:    knftables.Element{Key: []string{"udp", "30001"}, Value: []string{"drop"}},
		key:     []byte{17, 0, 0, 0, 0x75, 0x31, 0, 0},
		verdict: &expr.Verdict{Kind: expr.VerdictDrop},
	}, {
		name: "set of one address: no padding",
		decl: SetDecl{Name: "s", Type: "ipv4_addr"},
		elem: knftables.Element{Key: []string{"10.96.0.7"}},
		key:  []byte{10, 96, 0, 7},
	}, {
		name: "set of one protocol: the attribute is padded",
		decl: SetDecl{Name: "s", Type: "inet_proto"},
		elem: knftables.Element{Key: []string{"tcp"}},
		key:  []byte{6},
	}, {
		name:    "an IPv6 address in an IPv4 set",
		decl:    SetDecl{Name: "s", Type: "ipv4_addr . ipv4_addr"},
		elem:    knftables.Element{Key: []string{"10.0.0.1", "fd00::1"}},
		elemErr: true,
	}, {
		name:    "goto without a chain",
		decl:    SetDecl{Name: "m", Map: true, Type: "inet_proto . inet_service : verdict"},
		elem:    knftables.Element{Key: []string{"tcp", "1"}, Value: []string{"goto"}},
		elemErr: true,
	}, {
		name:   "interval sets go through nft",
		decl:   SetDecl{Name: "s", Type: "ipv4_addr", Flags: []knftables.SetFlag{knftables.IntervalFlag}},
		encErr: true,
	}, {
		name:   "unknown type",
		decl:   SetDecl{Name: "s", Type: "ether_addr"},
		encErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newElementEncoder(&tc.decl); (err != nil) != tc.encErr {
				t.Fatalf("newElementEncoder: err %v, want error %v", err, tc.encErr)
			}
			if tc.encErr {
				return
			}
			w := newNetlinkElements(knftables.IPv4Family, "t", nil)
			elem := tc.elem
			elem.Map = tc.decl.Name
			got, err := w.encode([]loggedOp{{verb: opAdd, obj: &elem}}, map[string]*SetDecl{tc.decl.Name: &tc.decl})
			if (err != nil) != tc.elemErr {
				t.Fatalf("encode: err %v, want error %v", err, tc.elemErr)
			}
			if err != nil {
				return
			}
			want := referenceBatch(t, nftables.TableFamilyIPv4, "t", referenceMessage{set: tc.decl.Name,
				elements: []nftables.SetElement{{Key: tc.key, Val: tc.val, VerdictData: tc.verdict}}})
			if diff := cmp.Diff(want, splitBatch(t, got.buf)); diff != "" {
				t.Errorf("batch (-google/nftables +ours):\n%s", diff)
			}
		})
	}
}

// TestElementBatchMessages holds a batch of flushes, adds and deletes on several sets
// equal to google/nftables' encoding of the messages it should be cut into: one per
// set, verb and run, with the sets grouped.
func TestElementBatchMessages(t *testing.T) {
	decls := map[string]*SetDecl{
		"ips": {Name: "ips", Type: "ipv6_addr"},
		"vm":  {Name: "vm", Map: true, Type: "inet_proto . inet_service : verdict"},
	}
	ip := func(s string) *knftables.Element { return &knftables.Element{Set: "ips", Key: []string{s}} }
	port := func(p string) *knftables.Element {
		return &knftables.Element{Map: "vm", Key: []string{"tcp", p}, Value: []string{"jump c"}}
	}
	ops := []loggedOp{
		{verb: opFlush, obj: &knftables.Set{Name: "ips"}},
		{verb: opAdd, obj: ip("fd00::1")},
		{verb: opDelete, obj: port("80")},
		{verb: opAdd, obj: ip("fd00::2")},
		{verb: opAdd, obj: port("80")},
		{verb: opAdd, obj: port("443")},
	}
	got, err := newNetlinkElements(knftables.IPv6Family, "kube-clusterip", nil).encode(ops, decls)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }
	tcpPort := func(p uint16) []byte { return append(binary.BigEndian.AppendUint16([]byte{6, 0, 0, 0}, p), 0, 0) }
	jump := &expr.Verdict{Kind: expr.VerdictJump, Chain: "c"}
	want := referenceBatch(t, nftables.TableFamilyIPv6, "kube-clusterip",
		referenceMessage{set: "ips", flush: true},
		referenceMessage{set: "ips", elements: []nftables.SetElement{{Key: addr("fd00::1")}, {Key: addr("fd00::2")}}},
		referenceMessage{set: "vm", delete: true, elements: []nftables.SetElement{{Key: tcpPort(80)}}},
		referenceMessage{set: "vm", elements: []nftables.SetElement{
			{Key: tcpPort(80), VerdictData: jump}, {Key: tcpPort(443), VerdictData: jump}}},
	)
	if diff := cmp.Diff(want, splitBatch(t, got.buf)); diff != "" {
		t.Errorf("batch (-google/nftables +ours):\n%s", diff)
	}
	if got.count != 4 {
		t.Errorf("count = %d, want the 4 messages between begin and end", got.count)
	}
}

// TestElementBatchSplitsLongLists cuts a long run of elements into messages whose
// element list fits a netlink attribute, every element in exactly one of them, numbered
// in order.
func TestElementBatchSplitsLongLists(t *testing.T) {
	decl := &SetDecl{Name: "m", Map: true, TypeOf: "ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport"}
	const n = 5000
	ops := make([]loggedOp, n)
	for i := range ops {
		ops[i] = loggedOp{verb: opAdd, elem: &Element{Set: "m", Key: []string{"10.96.0.1", "80", strconv.Itoa(i)},
			Value: []string{"10.244.0.5", "8080"}}}
	}
	got, err := newNetlinkElements(knftables.IPv4Family, "t", nil).encode(ops, map[string]*SetDecl{"m": decl})
	if err != nil {
		t.Fatal(err)
	}
	messages := splitBatch(t, got.buf)
	if len(messages) < 4 || got.count != len(messages)-2 {
		t.Fatalf("%d messages, count %d: want the elements cut into several", len(messages), got.count)
	}
	elements := 0
	for i := range messages {
		if seq := binary.NativeEndian.Uint32(got.buf[messageOffset(messages, i)+8:]); seq != uint32(i+1) {
			t.Fatalf("message %d has sequence number %d", i, seq)
		}
	}
	for _, msg := range messages[1 : len(messages)-1] {
		ad, err := netlink.NewAttributeDecoder(msg[16+4:])
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				ad.Nested(func(list *netlink.AttributeDecoder) error {
					for list.Next() {
						elements++
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			t.Fatalf("message of %d bytes: %v", len(msg), err)
		}
	}
	if elements != n {
		t.Errorf("%d elements in the messages, want %d", elements, n)
	}
}

// messageOffset is where messages[i] starts in its batch.
func messageOffset(messages [][]byte, i int) int {
	at := 0
	for _, msg := range messages[:i] {
		at += len(msg)
	}
	return at
}

// referenceMessage is one message of a batch as google/nftables builds it.
type referenceMessage struct {
	set      string
	flush    bool
	delete   bool
	elements []nftables.SetElement
}

// referenceBatch returns the messages google/nftables sends for msgs, in one batch.
func referenceBatch(t *testing.T, family nftables.TableFamily, table string, msgs ...referenceMessage) [][]byte {
	t.Helper()
	var sent []netlink.Message
	conn, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		sent = append(sent, req...)
		return nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		set := &nftables.Set{Table: &nftables.Table{Name: table, Family: family}, Name: m.set}
		switch {
		case m.flush:
			conn.FlushSet(set)
		case m.delete:
			err = conn.SetDeleteElements(set, m.elements)
		default:
			err = conn.SetAddElements(set, m.elements)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, m := range sent {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return splitBatch(t, out)
}

// splitBatch cuts a batch into its messages, with their sequence numbers and port IDs
// zeroed (the netlink library numbers them its own way).
func splitBatch(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 16 {
			t.Fatalf("%d bytes left, not a message header", len(b))
		}
		n := int(binary.NativeEndian.Uint32(b))
		if n < 16 || n > len(b) || n%4 != 0 {
			t.Fatalf("message length %d of %d bytes left", n, len(b))
		}
		msg := slices.Clone(b[:n])
		clear(msg[8:16])
		out, b = append(out, msg), b[n:]
	}
	return out
}

func TestOpLogOnlyElements(t *testing.T) {
	elem := &knftables.Element{Map: "m", Key: []string{"1"}, Value: []string{"drop"}}
	for _, tc := range []struct {
		name string
		plan func(*opLog)
		want bool
	}{
		{"element adds and deletes, map flushes", func(l *opLog) { l.Flush(&knftables.Map{Name: "m"}); l.Add(elem); l.Delete(elem) }, true},
		{"a rule", func(l *opLog) { l.Add(elem); l.Add(&knftables.Rule{Chain: "c", Rule: "drop"}) }, false},
		{"a new set", func(l *opLog) { l.Add(&knftables.Set{Name: "s"}) }, false},
		{"a chain flush", func(l *opLog) { l.Flush(&knftables.Chain{Name: "c"}) }, false},
	} {
		l := &opLog{}
		tc.plan(l)
		if got := l.onlyElements(); got != tc.want {
			t.Errorf("%s: onlyElements() = %v, want %v", tc.name, got, tc.want)
		}
	}
}
