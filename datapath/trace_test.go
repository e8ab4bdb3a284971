package datapath

import (
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube-clusterip/kube-clusterip/datapath/nfttrace"
)

// TestTracedPackets plays the packet scenarios on the tracer over the Fake: no root, no
// namespaces, milliseconds.
func TestTracedPackets(t *testing.T) {
	for _, s := range packetScenarios() {
		t.Run(s.name, func(t *testing.T) {
			family, node := corev1.IPv4Protocol, nodeIP
			ips := map[string]string{fromClient: "10.244.100.2", fromNode: nodeIP, fromOutside: outsideIP}
			podIP := func(i int) string { return fmt.Sprintf("10.244.%d.2", i) }
			if s.family == corev1.IPv6Protocol {
				family, node = corev1.IPv6Protocol, nodeIPv6
				ips = map[string]string{fromClient: "fd00:10:244:100::2", fromNode: node, fromOutside: outsideIPv6}
				podIP = func(i int) string { return fmt.Sprintf("fd00:10:244:%d::2", i) }
			}
			names := map[string]string{}
			for i, p := range s.pods {
				ips[p.name] = podIP(i + 1)
				names[ips[p.name]] = p.name
			}
			cfg := s.config()
			clock := clocktesting.NewFakeClock(time.Unix(1e9, 0))
			cfg.Clock = clock
			fake, err := NewFake(cfg)
			if err != nil {
				t.Fatal(err)
			}
			services, endpointSlices := s.services(func(name string) string { return ips[name] })
			mustSync(t, fake.Proxier, services, endpointSlices...)
			host, port, _ := net.SplitHostPort(s.to)
			dport, _ := strconv.Atoi(port)
			tracer := fake.Tracer(family, node, outsideGateway, outsideGatewayV6)
			packet := nfttrace.Packet{SourceIP: ips[s.from], Protocol: "tcp", DestIP: host, DestPort: dport}
			trace := func() []nfttrace.Outcome {
				t.Helper()
				outcomes, err := tracer.Trace(packet)
				if err != nil {
					t.Fatal(err)
				}
				return outcomes
			}
			outcomes := trace()
			checkOutcomes(t, s.want, outcomes, names)
			if len(s.want.reach) == 0 {
				return
			}
			tracer.Connect(outcomes[0])
			again := nfttrace.Summarize(trace())
			if s.want.sticky {
				if !slices.Equal(again.DNAT, []string{outcomes[0].DNAT}) {
					t.Errorf("after a connection to %s, the next goes to %v; want the same endpoint", outcomes[0].DNAT, again.DNAT)
				}
				clock.Step(time.Minute) // the affinity timeout
				checkOutcomes(t, s.want, trace(), names)
				return
			}
			if want := len(s.want.reach); len(again.DNAT) != want {
				t.Errorf("after one connection, the next can reach %v; want any of the %d endpoints", again.DNAT, want)
			}
		})
	}
}

// checkOutcomes compares a trace with what the scenario wants.
func checkOutcomes(t *testing.T, want scenarioWant, outcomes []nfttrace.Outcome, podByIP map[string]string) {
	t.Helper()
	got := nfttrace.Summarize(outcomes)
	verdict := nfttrace.Accept
	switch {
	case want.refused:
		verdict = nfttrace.Reject
	case want.dropped:
		verdict = nfttrace.Drop
	}
	// Unserved: accepted as it is, neither DNAT nor masquerade (checked below).
	if !slices.Equal(got.Verdicts, []nfttrace.Verdict{verdict}) {
		t.Fatalf("verdicts %v, want %s; outcomes:\n%s", got.Verdicts, verdict, describeOutcomes(outcomes))
	}
	var reached []string
	for _, target := range got.DNAT {
		ip, port, _ := net.SplitHostPort(target)
		if podByIP[ip] == "" || port != "8080" {
			t.Errorf("DNAT to %s, which is no pod's port 8080", target)
		}
		reached = append(reached, podByIP[ip])
	}
	slices.Sort(reached)
	if wantReach := slices.Sorted(slices.Values(want.reach)); !slices.Equal(reached, wantReach) {
		t.Errorf("reaches %v, want %v; outcomes:\n%s", reached, wantReach, describeOutcomes(outcomes))
	}
	if verdict == nfttrace.Accept && (got.Masquerade != want.masquerade || got.Mixed) {
		t.Errorf("masquerade %v (mixed %v), want %v; outcomes:\n%s", got.Masquerade, got.Mixed, want.masquerade, describeOutcomes(outcomes))
	}
}

func describeOutcomes(outcomes []nfttrace.Outcome) string {
	var s string
	for i, o := range outcomes {
		s += fmt.Sprintf("#%d %s dnat=%q masquerade=%v\n", i, o.Verdict, o.DNAT, o.Masquerade)
		for _, r := range o.Rules {
			s += "    " + r + "\n"
		}
	}
	return s
}

// Beyond the scenarios (IPv4 TCP, which the kernel test replays): IPv6 and UDP.
func TestTracedPacketsOfOtherFamiliesAndProtocols(t *testing.T) {
	node, err := NewFake(Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4, clusterCIDRv6},
		ServiceCIDRs: []string{serviceCIDRv4, serviceCIDRv6}})
	if err != nil {
		t.Fatal(err)
	}
	plain, plainSlice := seedIPv6()
	stickyV6, stickySlice := seedIPv6()
	stickyV6.Name, stickyV6.Spec.ClusterIP, stickyV6.Spec.ClusterIPs = "sticky-v6", "fd00:10:96::11", []string{"fd00:10:96::11"}
	stickySlice.Labels[discoveryv1.LabelServiceName] = stickyV6.Name
	dns, dnsSlice := seedUDP()
	mustSync(t, node.Proxier, []*corev1.Service{plain, sticky(stickyV6, 60), dns}, plainSlice, stickySlice, dnsSlice)
	v6Endpoints := []string{"[fd00:10:244:1::10]:8080", "[fd00:10:244:2::11]:8080"}
	accepted := []nfttrace.Verdict{nfttrace.Accept}
	cases := []struct {
		name   string
		family corev1.IPFamily
		packet nfttrace.Packet
		want   nfttrace.Summary
	}{
		{name: "IPv6: spread over both endpoints", family: corev1.IPv6Protocol,
			packet: nfttrace.Packet{SourceIP: "fd00:10:244:7::2", Protocol: "tcp", DestIP: "fd00:10:96::10", DestPort: 80},
			want:   nfttrace.Summary{Verdicts: accepted, DNAT: v6Endpoints}},
		{name: "IPv6: ClientIP affinity picks among both", family: corev1.IPv6Protocol,
			packet: nfttrace.Packet{SourceIP: "fd00:10:244:7::2", Protocol: "tcp", DestIP: "fd00:10:96::11", DestPort: 80},
			want:   nfttrace.Summary{Verdicts: accepted, DNAT: v6Endpoints}},
		{name: "IPv6: from the node, masqueraded", family: corev1.IPv6Protocol,
			packet: nfttrace.Packet{SourceIP: nodeIPv6, Protocol: "tcp", DestIP: "fd00:10:96::10", DestPort: 80},
			want:   nfttrace.Summary{Verdicts: accepted, DNAT: v6Endpoints, Masquerade: true}},
		{name: "IPv6: a port the Service lacks is refused", family: corev1.IPv6Protocol,
			packet: nfttrace.Packet{SourceIP: "fd00:10:244:7::2", Protocol: "tcp", DestIP: "fd00:10:96::10", DestPort: 81},
			want:   nfttrace.Summary{Verdicts: []nfttrace.Verdict{nfttrace.Reject}}},
		{name: "IPv6: an unallocated address is dropped", family: corev1.IPv6Protocol,
			packet: nfttrace.Packet{SourceIP: "fd00:10:244:7::2", Protocol: "tcp", DestIP: "fd00:10:96::99", DestPort: 80},
			want:   nfttrace.Summary{Verdicts: []nfttrace.Verdict{nfttrace.Drop}}},
		{name: "UDP port of a DNS Service", family: corev1.IPv4Protocol,
			packet: nfttrace.Packet{SourceIP: "10.244.7.2", Protocol: "udp", DestIP: "10.96.0.53", DestPort: 53},
			want:   nfttrace.Summary{Verdicts: accepted, DNAT: []string{"10.244.2.53:5353"}}},
		{name: "TCP port of the same number", family: corev1.IPv4Protocol,
			packet: nfttrace.Packet{SourceIP: "10.244.7.2", Protocol: "tcp", DestIP: "10.96.0.53", DestPort: 53},
			want:   nfttrace.Summary{Verdicts: accepted, DNAT: []string{"10.244.2.53:5353"}}},
		{name: "SCTP, which the Service lacks: refused", family: corev1.IPv4Protocol,
			packet: nfttrace.Packet{SourceIP: "10.244.7.2", Protocol: "sctp", DestIP: "10.96.0.53", DestPort: 53},
			want:   nfttrace.Summary{Verdicts: []nfttrace.Verdict{nfttrace.Reject}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodeAddress := nodeIP
			if tc.family == corev1.IPv6Protocol {
				nodeAddress = nodeIPv6
			}
			outcomes, err := node.Tracer(tc.family, nodeAddress).Trace(tc.packet)
			if err != nil {
				t.Fatal(err)
			}
			if got := nfttrace.Summarize(outcomes); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v; outcomes:\n%s", got, tc.want, describeOutcomes(outcomes))
			}
		})
	}
}
