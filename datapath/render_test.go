package datapath

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

// fakeDump applies a full sync of rs to a new Fake and returns its dump.
func fakeDump(t testing.TB, rs *Ruleset) string {
	t.Helper()
	fake := knftables.NewFake(NFTFamily(rs.Family), DefaultTableName)
	tx := fake.NewTransaction()
	planFull(tx, rs, existingObjects{})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatalf("Fake rejected the full sync: %v\n%s", err, tx)
	}
	return sortElementLines(fake.Dump())
}

// sortElementLines sorts the element lines of a Fake dump, which come in insertion
// order; every other line keeps its place (rule order matters, element order not).
func sortElementLines(dump string) string {
	lines := strings.Split(dump, "\n")
	var elements []int
	for i, l := range lines {
		if strings.HasPrefix(l, "add element ") {
			elements = append(elements, i)
		}
	}
	sorted := make([]string, len(elements))
	for i, at := range elements {
		sorted[i] = lines[at]
	}
	sort.Strings(sorted)
	for i, at := range elements {
		lines[at] = sorted[i]
	}
	return strings.Join(lines, "\n")
}

// serviceLines drops from dump the lines of the ruleset without Services, so that each
// case shows only what its Service adds.
func serviceLines(t testing.TB, cfg Config, family corev1.IPFamily, dump string) string {
	base := map[string]bool{}
	for _, line := range strings.Split(fakeDump(t, Render(cfg, family, nil, nil)), "\n") {
		base[line] = true
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(dump), "\n") {
		if !base[line] {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestRenderBase(t *testing.T) {
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/48"}, ServiceCIDRs: []string{"10.96.0.0/12"}}
	got := strings.TrimSpace(fakeDump(t, Render(cfg, corev1.IPv4Protocol, nil, nil)))
	want := strings.TrimSpace(expectedBaseV4)
	if got != want {
		t.Errorf("base ruleset mismatch\n--- got ---\n%s\n--- want ---\n%s", got, want)
	}
}

func TestRenderSeedServices(t *testing.T) {
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/48"}}
	cases := []struct {
		name   string
		family corev1.IPFamily // default IPv4
		seed   func() (*corev1.Service, *discoveryv1.EndpointSlice)
		want   string
	}{
		{name: "backend-service: three pods behind 80->8080", seed: seedBackend, want: expectedBackend},
		{name: "multi-port-service: each port to its own target port", seed: seedMultiPort, want: expectedMultiPort},
		{name: "sticky-service: ClientIP affinity through endpoint chains", seed: seedSticky, want: expectedSticky},
		{name: "external-database: selectorless Service with mirrored slice", seed: seedExternalDatabase, want: expectedExternalDatabase},
		{name: "no endpoints: the port is rejected", seed: seedNoEndpoints, want: expectedNoEndpoints},
		{name: "internalTrafficPolicy Local with endpoints only elsewhere: dropped", seed: seedLocalElsewhere, want: expectedLocalElsewhere},
		{name: "no ready endpoint: serving terminating ones are used, others not", seed: seedTerminating, want: expectedTerminating},
		{name: "UDP DNS-like Service", seed: seedUDP, want: expectedUDP},
		{name: "IPv6 Service to IPv6 pods", family: corev1.IPv6Protocol, seed: seedIPv6, want: expectedIPv6},
		{name: "a second port with the same protocol and number (refused by the API server) is left out", seed: func() (*corev1.Service, *discoveryv1.EndpointSlice) {
			svc, slice := seedBackend()
			again := svc.Spec.Ports[0]
			again.Name, again.TargetPort = "again", intstr.FromInt32(9999)
			svc.Spec.Ports = append(svc.Spec.Ports, again)
			return svc, slice
		}, want: expectedBackend},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			family := tc.family
			if family == "" {
				family = corev1.IPv4Protocol
			}
			svc, slice := tc.seed()
			rs := Render(cfg, family, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice})
			got := serviceLines(t, cfg, family, fakeDump(t, rs))
			if want := strings.TrimSpace(tc.want); got != want {
				t.Errorf("ruleset mismatch\n--- got ---\n%s\n--- want ---\n%s", got, want)
			}
		})
	}
}

func TestCompareNamesOrdersLikeNamespaceSlashName(t *testing.T) {
	names := []types.NamespacedName{
		{Namespace: "a", Name: "x"}, {Namespace: "a", Name: "y"}, {Namespace: "a-b", Name: "x"},
		{Namespace: "a.b", Name: "x"}, {Namespace: "ab", Name: "a"}, {Namespace: "b", Name: "a"},
		{Namespace: "", Name: "z"}, {Namespace: "a/b", Name: "c"}, {Namespace: "a", Name: "b/c"},
		{Namespace: "a0", Name: ""}, {Namespace: "a", Name: ""},
	}
	sign := func(n int) int { return max(-1, min(1, n)) }
	for _, a := range names {
		for _, b := range names {
			if got, want := sign(compareNames(a, b)), sign(strings.Compare(a.String(), b.String())); got != want {
				t.Errorf("compareNames(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

// TestRenderAcrossCPUsIsRenderInOrder renders many Services that contend for NodePorts
// and external IPs, across the CPUs, and holds the result equal to rendering them one
// after the other, each claiming what the Services before it left.
func TestRenderAcrossCPUsIsRenderInOrder(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4}}.withDefaults()
	services, slices := manyServicesOfType(corev1.ServiceTypeNodePort, 8*minServicesPerWorker, 3)
	for i, svc := range services {
		svc.Spec.Ports[0].NodePort = int32(30000 + i%100) // three or so Services to a NodePort
		svc.Spec.ExternalIPs = []string{fmt.Sprintf("203.0.113.%d", i%50)}
	}
	got := Render(cfg, corev1.IPv4Protocol, services, slices)

	want := map[types.NamespacedName]*Fragment{}
	held, grouped, unique := map[string]bool{}, GroupSlices(slices), UniqueClusterIPServices(services, corev1.IPv4Protocol)
	contended := 0
	for _, key := range sortedNames(unique) {
		want[key] = claimFrontends(renderService(cfg, corev1.IPv4Protocol, unique[key], grouped[key], takenIn(held), nil), held)
		if len(want[key].frontends) < len(RenderService(cfg, corev1.IPv4Protocol, unique[key], grouped[key]).frontends) {
			contended++
		}
	}
	if contended == 0 {
		t.Fatal("no Service lost a frontend to an earlier one: the test does not contend")
	}
	if len(got.Services) != len(want) {
		t.Fatalf("%d Services rendered, want %d", len(got.Services), len(want))
	}
	for key, f := range want {
		if !reflect.DeepEqual(got.Services[key], f) {
			t.Errorf("Service %s:\ngot  %+v\nwant %+v", key, got.Services[key], f)
		}
	}
}
