package nfttrace

import (
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/knftables"
)

// table builds a Fake from "add ..." lines written without the "ip t" after each
// object kind, with the hook chains every case uses.
func table(t *testing.T, lines ...string) *knftables.Fake {
	t.Helper()
	fake := knftables.NewFake(knftables.IPv4Family, "t")
	dump := []string{"add table ip t",
		"add chain ip t pre { type nat hook prerouting priority -100 ; }",
		"add chain ip t out { type nat hook output priority -100 ; }",
		"add chain ip t fwd { type filter hook forward priority 0 ; }",
		"add chain ip t in { type filter hook input priority 0 ; }",
		"add chain ip t post { type nat hook postrouting priority 100 ; }",
	}
	for _, l := range lines {
		kind, rest, _ := strings.Cut(l, " ")
		dump = append(dump, "add "+kind+" ip t "+rest)
	}
	if err := fake.ParseDump(strings.Join(dump, "\n")); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(dump, "\n"))
	}
	return fake
}

const nodeIP = "192.168.0.1"

// rewriteToClusterIP rewrites the destination of NodePort 30080 to 10.96.0.1:80, whose
// endpoints are in @eps, in the way external frontends can share a ClusterIP's endpoints.
func rewriteToClusterIP() []string {
	return []string{
		"map ips { typeof meta l4proto . th dport : ip daddr ; }",
		"map ports { typeof meta l4proto . th dport : th dport ; }",
		"map eps { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }",
		"element ips { tcp . 30080 : 10.96.0.1 }",
		"element ports { tcp . 30080 : 80 }",
		"element eps { 10.96.0.1 . 80 . 0 : 10.0.2.1 . 8080 }",
		"element eps { 10.96.0.1 . 80 . 1 : 10.0.2.2 . 8080 }",
		"rule pre ip daddr set meta l4proto . th dport map @ips tcp dport set meta l4proto . th dport map @ports",
	}
}

func TestTrace(t *testing.T) {
	pod := Packet{SourceIP: "10.0.1.2", Protocol: "tcp", DestIP: "10.96.0.1", DestPort: 80}
	udp := pod
	udp.Protocol = "udp"
	fromNode := pod
	fromNode.SourceIP = nodeIP
	nodePort := Packet{SourceIP: "203.0.113.9", Protocol: "tcp", DestIP: nodeIP, DestPort: 30080}
	otherNodePort := nodePort
	otherNodePort.DestPort = 30081
	cases := []struct {
		name   string
		rules  []string
		packet Packet
		want   Summary
		count  int // outcomes; 0: one
	}{
		{name: "an empty table accepts", packet: pod, want: Summary{Verdicts: []Verdict{Accept}}},
		{name: "a jump comes back to the next rule", rules: []string{
			"chain a", "rule pre jump a", "rule pre drop", "rule a ip daddr 10.96.0.2 accept",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Drop}}},
		{name: "an accept in a jumped-to chain ends the base chain", rules: []string{
			"chain a", "rule pre jump a", "rule pre drop", "rule a accept",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Accept}}},
		{name: "an accept ends its base chain only; the next hook still runs", rules: []string{
			"rule pre accept", "rule fwd reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Reject}}},
		{name: "after a goto, the chain returns to its caller's caller", rules: []string{
			"chain a", "chain b", "rule pre jump a", "rule pre drop", "rule a goto b", "rule a reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Drop}}},
		{name: "a verdict-map miss goes on with the next rule", rules: []string{
			"map m { type ipv4_addr . inet_proto . inet_service : verdict ; }",
			"element m { 10.96.0.2 . tcp . 80 : drop }",
			"rule fwd ip daddr . meta l4proto . th dport vmap @m", "rule fwd reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Reject}}},
		{name: "a verdict-map hit applies its verdict", rules: []string{
			"map m { type ipv4_addr . inet_proto . inet_service : verdict ; }",
			"element m { 10.96.0.1 . tcp . 80 : drop }",
			"rule fwd ip daddr . meta l4proto . th dport vmap @m", "rule fwd reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Drop}}},
		{name: "numgen: every pick is an outcome", rules: []string{
			"map eps { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }",
			"element eps { 10.96.0.1 . 80 . 0 : 10.0.2.1 . 8080 }",
			"element eps { 10.96.0.1 . 80 . 1 : 10.0.2.2 . 8080 }",
			"element eps { 10.96.0.1 . 80 . 2 : 10.0.2.3 . 8080 }",
			"rule pre dnat to ip daddr . tcp dport . numgen random mod 3 map @eps",
		}, packet: pod, count: 3, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"10.0.2.1:8080", "10.0.2.2:8080", "10.0.2.3:8080"}}},
		{name: "a payload of another protocol breaks off the rule before its numgen", rules: []string{
			"map eps { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }",
			"element eps { 10.96.0.1 . 80 . 0 : 10.0.2.1 . 8080 }",
			"rule pre dnat to ip daddr . tcp dport . numgen random mod 3 map @eps",
		}, packet: udp, want: Summary{Verdicts: []Verdict{Accept}}},
		{name: "a destination rewritten before DNAT keys the endpoint map", rules: append(rewriteToClusterIP(),
			"rule pre dnat to ip daddr . tcp dport . numgen random mod 2 map @eps",
		), packet: nodePort, count: 2, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"10.0.2.1:8080", "10.0.2.2:8080"}}},
		{name: "a rewrite whose map misses breaks off its rule", rules: append(rewriteToClusterIP(),
			"rule pre dnat to ip daddr . tcp dport . numgen random mod 2 map @eps",
		), packet: otherNodePort, count: 2, want: Summary{Verdicts: []Verdict{Accept}}},
		{name: "a rewrite of another protocol's port breaks off its rule", rules: []string{
			"rule pre udp dport set 80 dnat to 10.0.2.9:8080", "rule pre dnat to 10.0.2.8:8080",
		}, packet: nodePort, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"10.0.2.8:8080"}}},
		{name: "nested numgen picks multiply", rules: []string{
			"chain a", "chain b", "chain c",
			"rule pre numgen random mod 2 vmap { 0 : goto a , 1 : goto b }",
			"rule a numgen random mod 2 vmap { 0 : goto c , 1 : drop }",
			"rule b reject", "rule c dnat to 10.0.2.9:8080",
		}, packet: pod, count: 3, want: Summary{Verdicts: []Verdict{Accept, Drop, Reject}, DNAT: []string{"10.0.2.9:8080"}}},
		{name: "the filter hook after DNAT sees the new destination", rules: []string{
			"rule pre dnat to 10.0.2.9:8080", "rule fwd ip daddr 10.96.0.1 drop", "rule fwd tcp dport 8080 reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Reject}, DNAT: []string{"10.0.2.9:8080"}}},
		{name: "DNAT to a node address goes to input, and not through postrouting", rules: []string{
			"rule pre dnat to 192.168.0.1:8080", "rule fwd drop", "rule in accept", "rule post masquerade",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"192.168.0.1:8080"}}},
		{name: "from the node: output, then postrouting; fib saddr type local", rules: []string{
			"chain mark", "rule mark meta mark set meta mark | 0x4000",
			"rule pre drop", "rule out fib saddr type local jump mark", "rule out dnat to 10.0.2.9:8080",
			"rule post meta mark & 0x4000 == 0 return", "rule post masquerade fully-random",
		}, packet: fromNode, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"10.0.2.9:8080"}, Masquerade: true}},
		{name: "an unmarked packet is not masqueraded", rules: []string{
			"rule post meta mark & 0x4000 == 0 return", "rule post masquerade",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Accept}}},
		{name: "prefix, set literal and negation", rules: []string{
			"rule fwd ip saddr != { 10.0.0.0/16, 10.1.0.0/16 } drop", "rule fwd ip daddr 10.96.0.0/12 reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Reject}}},
		{name: "ct status dnat and a concatenated set lookup (hairpin)", rules: []string{
			"set hairpin { type ipv4_addr . ipv4_addr ; }", "element hairpin { 10.0.1.2 . 10.0.1.2 }",
			"rule pre dnat to 10.0.1.2:8080",
			"rule post ct status dnat ip saddr . ip daddr @hairpin masquerade",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Accept}, DNAT: []string{"10.0.1.2:8080"}, Masquerade: true}},
		{name: "ct state new matches the first packet; established does not", rules: []string{
			"rule fwd ct state established,related drop", "rule fwd ct state new reject",
		}, packet: pod, want: Summary{Verdicts: []Verdict{Reject}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outcomes, err := New(table(t, tc.rules...), []string{nodeIP}, nil).Trace(tc.packet)
			if err != nil {
				t.Fatal(err)
			}
			count := tc.count
			if count == 0 {
				count = 1
			}
			if len(outcomes) != count {
				t.Errorf("%d outcomes, want %d: %+v", len(outcomes), count, outcomes)
			}
			if got := Summarize(outcomes); !slices.Equal(got.Verdicts, tc.want.Verdicts) || !slices.Equal(got.DNAT, tc.want.DNAT) ||
				got.Masquerade != tc.want.Masquerade || got.Mixed != tc.want.Mixed {
				t.Errorf("got %+v, want %+v; outcomes %+v", got, tc.want, outcomes)
			}
		})
	}
}

func TestTraceRefusesRulesItCannotRead(t *testing.T) {
	tracer := New(table(t, "rule fwd iifname eth0 drop"), nil, nil)
	_, err := tracer.Trace(Packet{SourceIP: "10.0.1.2", Protocol: "tcp", DestIP: "10.96.0.1", DestPort: 80})
	if err == nil || !strings.Contains(err.Error(), "iifname") || !strings.Contains(err.Error(), "chain fwd") {
		t.Errorf("want an error naming the chain and the expression, got %v", err)
	}
}

func TestConnectedClientsStayInDynamicSetsUntilTheTimeout(t *testing.T) {
	fake := table(t,
		"set seen { type ipv4_addr ; flags dynamic,timeout ; timeout 10s ; }",
		"chain a", "chain b",
		"rule pre ip saddr @seen goto b",
		"rule pre numgen random mod 2 vmap { 0 : goto a , 1 : goto b }",
		"rule a update @seen { ip saddr }", "rule a dnat to 10.0.2.1:8080",
		"rule b dnat to 10.0.2.2:8080",
	)
	clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	tracer := New(fake, nil, clock)
	packet := Packet{SourceIP: "10.0.1.2", Protocol: "tcp", DestIP: "10.96.0.1", DestPort: 80}
	dnat := func() []string {
		t.Helper()
		outcomes, err := tracer.Trace(packet)
		if err != nil {
			t.Fatal(err)
		}
		return Summarize(outcomes).DNAT
	}
	outcomes, err := tracer.Trace(packet)
	if err != nil {
		t.Fatal(err)
	}
	if got := dnat(); !slices.Equal(got, []string{"10.0.2.1:8080", "10.0.2.2:8080"}) {
		t.Fatalf("before any connection: %v", got)
	}
	tracer.Connect(outcomes[0]) // through chain a, which records the client
	if got := dnat(); !slices.Equal(got, []string{"10.0.2.2:8080"}) {
		t.Errorf("a recorded client goes to b: got %v", got)
	}
	clock.Step(10 * time.Second)
	if got := dnat(); len(got) != 2 {
		t.Errorf("after the set's timeout, the client is forgotten: got %v", got)
	}
}

func TestPriorityValue(t *testing.T) {
	for p, want := range map[string]int{"-100": -100, "dstnat": -100, "dstnat-10": -110, "dstnat - 10": -110, "srcnat + 5": 105, "filter": 0} {
		priority := knftables.BaseChainPriority(p)
		if got := priorityValue(&priority); got != want {
			t.Errorf("priority %q: %d, want %d", p, got, want)
		}
	}
}
