package diagnose

import (
	"context"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/datapath"
)

// testdata/nft-table.nft is a node's table: one Service through the shared endpoints map
// (10.96.0.10), one with affinity chains (10.96.0.20), one without endpoints (10.96.0.30). Its
// maps are read through a knftables.Fake holding it, its rules from testdata/nft-table.json,
// which is `nft -j list table ip kube-clusterip` (nft 1.0.6) after loading it in a scratch
// network namespace.
func loadTestTable(t *testing.T) *NodeTable {
	t.Helper()
	dump, err := os.ReadFile("testdata/nft-table.nft")
	if err != nil {
		t.Fatal(err)
	}
	fake := knftables.NewFake(knftables.IPv4Family, NFTTableName)
	if err := fake.ParseDump(string(dump)); err != nil {
		t.Fatalf("load testdata/nft-table.nft into a knftables.Fake: %v", err)
	}
	table := NewNodeTable()
	if err := table.ReadMaps(context.Background(), fake); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/nft-table.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := table.AddRulesJSON(data); err != nil {
		t.Fatal(err)
	}
	return table
}

func TestNodeTableEndpoints(t *testing.T) {
	table := loadTestTable(t)
	tests := []struct {
		name           string
		key            ServicePortKey
		wantEndpoints  []string
		wantProgrammed bool
	}{
		{
			name:           "Service without affinity: the dnat-mod-N chain's map elements",
			key:            ServicePortKey{IP: "10.96.0.10", Protocol: "tcp", Port: 80},
			wantEndpoints:  []string{"10.244.1.10:8080", "10.244.1.11:8080"},
			wantProgrammed: true,
		},
		{
			name:           "Service with affinity: the endpoint chains its service chain jumps to",
			key:            ServicePortKey{IP: "10.96.0.20", Protocol: "tcp", Port: 80},
			wantEndpoints:  []string{"10.244.1.20:8080", "10.244.2.21:8080"},
			wantProgrammed: true,
		},
		{
			name:           "Service port without endpoints is not in service-ips",
			key:            ServicePortKey{IP: "10.96.0.30", Protocol: "tcp", Port: 80},
			wantProgrammed: false,
		},
		{
			name:           "another protocol of a programmed IP is not programmed",
			key:            ServicePortKey{IP: "10.96.0.10", Protocol: "udp", Port: 80},
			wantProgrammed: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, programmed := table.Endpoints(tt.key)
			if programmed != tt.wantProgrammed {
				t.Errorf("programmed = %t, want %t", programmed, tt.wantProgrammed)
			}
			if diff := cmp.Diff(tt.wantEndpoints, got); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
		})
	}
	if !table.NoEndpoints[ServicePortKey{IP: "10.96.0.30", Protocol: "tcp", Port: 80}] {
		t.Errorf("10.96.0.30:80/tcp is not in no-endpoint-services")
	}
}

func TestCheckDatapath(t *testing.T) {
	table := loadTestTable(t)
	withIP := func(ip string) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip} }
	}
	tests := []struct {
		name      string
		svc       *corev1.Service
		endpoints []sliceEP
		want      wantFinding
	}{
		{
			name:      "programmed with the slices' ready endpoints",
			svc:       backendService(withIP("10.96.0.10")),
			endpoints: []sliceEP{readyEP("10.244.1.10"), readyEP("10.244.1.11"), notReadyEP("10.244.1.12")},
			want:      wantFinding{OK, CheckDatapath, "sends 10.96.0.10:80/tcp to 10.244.1.10:8080, 10.244.1.11:8080, as the EndpointSlices say"},
		},
		{
			name:      "a stale endpoint on the node",
			svc:       backendService(withIP("10.96.0.10")),
			endpoints: []sliceEP{readyEP("10.244.1.10")},
			want:      wantFinding{Problem, CheckDatapath, "sends 10.96.0.10:80/tcp to [10.244.1.10:8080, 10.244.1.11:8080], the EndpointSlices say [10.244.1.10:8080]"},
		},
		{
			name:      "affinity chains followed",
			svc:       backendService(withIP("10.96.0.20")),
			endpoints: []sliceEP{readyEP("10.244.1.20"), readyEP("10.244.2.21")},
			want:      wantFinding{OK, CheckDatapath, "sends 10.96.0.20:80/tcp to 10.244.1.20:8080, 10.244.2.21:8080"},
		},
		{
			name:      "no usable endpoint and rejected: as expected",
			svc:       backendService(withIP("10.96.0.30")),
			endpoints: []sliceEP{notReadyEP("10.244.1.30")},
			want:      wantFinding{OK, CheckDatapath, "rejects 10.96.0.30:80/tcp"},
		},
		{
			name:      "endpoints in the slices but the port not programmed",
			svc:       backendService(withIP("10.96.0.40")),
			endpoints: []sliceEP{readyEP("10.244.1.40")},
			want:      wantFinding{Problem, CheckDatapath, "does not program 10.96.0.40:80/tcp"},
		},
		{
			name:      "none ready: serving terminating endpoints are used",
			svc:       backendService(withIP("10.96.0.10")),
			endpoints: []sliceEP{{ip: "10.244.1.10", serving: true, terminating: true}, {ip: "10.244.1.11", serving: true, terminating: true}},
			want:      wantFinding{OK, CheckDatapath, "sends 10.96.0.10:80/tcp to 10.244.1.10:8080, 10.244.1.11:8080"},
		},
		{
			name: "internalTrafficPolicy Local: only this node's endpoints",
			svc: backendService(withIP("10.96.0.10"), func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			endpoints: []sliceEP{{ip: "10.244.1.10", ready: true, serving: true, node: "node-a"}, {ip: "10.244.1.11", ready: true, serving: true, node: "node-a"}, {ip: "10.244.2.10", ready: true, serving: true, node: "node-b"}},
			want:      wantFinding{OK, CheckDatapath, "sends 10.96.0.10:80/tcp to 10.244.1.10:8080, 10.244.1.11:8080"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slices := []*discoveryv1.EndpointSlice{sliceFor(tt.svc, "x", 8080, tt.endpoints...)}
			report := finish(&Report{}, checkDatapath(tt.svc, slices, table, datapath.Node{Name: "node-a"}))
			if !hasFinding(report, tt.want) {
				t.Errorf("no %s %s finding containing %q; findings:\n%s", tt.want.severity, tt.want.check, tt.want.contains, dump(report))
			}
		})
	}
}
