package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
	"sigs.k8s.io/knftables"
)

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
			enc, err := newElementEncoder(&tc.decl)
			if (err != nil) != tc.encErr {
				t.Fatalf("newElementEncoder: err %v, want error %v", err, tc.encErr)
			}
			if err != nil {
				return
			}
			got, _, err := enc.element(tc.elem.Key, tc.elem.Value, false)
			if (err != nil) != tc.elemErr {
				t.Fatalf("element: err %v, want error %v", err, tc.elemErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.key, got.Key); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.val, got.Val); diff != "" {
				t.Errorf("value (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.verdict, got.VerdictData); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
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
