package datapath

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPacketsUDPFlowDrainsToATerminatingEndpointAndARestartCleansIt(t *testing.T) {
	requireDatapath(t)
	pods := udpPods(t, 5353, "udp-a", "udp-b")
	a, b := pods[0], pods[1]
	client := newPod(t, "udp-client", "")
	svc := makeService("drain", "10.96.1.54", udp("dns", 53, 5353))
	first := newTestProxier(t, nil)
	mustSync(t, first, []*corev1.Service{svc}, makeSlice(svc, "drain-1", readyEP(a.ip, "node-a")))
	conn := client.dialUDP(t, "10.96.1.54:53")
	if reply, err := udpAsk(conn); err != nil || reply != "udp-a:5353" {
		t.Fatalf("first answer %q, error %v", reply, err)
	}

	// udp-a terminates but still serves, udp-b is ready: the flow stays with udp-a.
	terminating := ep{ip: a.ip, node: "node-a", serving: true, terminating: true}
	mustSync(t, first, []*corev1.Service{svc}, makeSlice(svc, "drain-1", terminating, readyEP(b.ip, "node-a")))
	if reply, err := udpAsk(conn); err != nil || reply != "udp-a:5353" {
		t.Errorf("while udp-a drains: answer %q, error %v; want udp-a", reply, err)
	}

	// The agent restarts (a new Proxier over the same table) after udp-a stopped serving:
	// its first sync deletes the flow, which moves to udp-b.
	restarted := newTestProxier(t, nil)
	gone := ep{ip: a.ip, node: "node-a", serving: false, terminating: true}
	mustSync(t, restarted, []*corev1.Service{svc}, makeSlice(svc, "drain-1", gone, readyEP(b.ip, "node-a")))
	if reply, err := udpAsk(conn); err != nil || reply != "udp-b:5353" {
		t.Errorf("after the restart: answer %q, error %v; want udp-b", reply, err)
	}
}

// TestCleanupFromAFreshProcessLeavesNoTable plays `kube-clusterip --cleanup`: a Proxier
// that never synced deletes the tables another one wrote, in both families.
func TestCleanupFromAFreshProcessLeavesNoTable(t *testing.T) {
	requireDatapath(t)
	svc := nodePortService("cleanup", "10.96.2.90", corev1.ServiceExternalTrafficPolicyLocal)
	mustSync(t, newTestProxier(t, nil), []*corev1.Service{svc}, makeSlice(svc, "cleanup-1", readyEP("10.244.9.9", "node-a")))
	if tables := nftTables(t); !strings.Contains(tables, DefaultTableName) {
		t.Fatalf("no table to clean up: %q", tables)
	}
	fresh, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tables := nftTables(t); strings.Contains(tables, DefaultTableName) {
		t.Errorf("tables left after cleanup: %q", tables)
	}
	if err := fresh.Cleanup(context.Background()); err != nil {
		t.Errorf("a second cleanup (nothing left) must succeed too: %v", err)
	}
}

// nftTables lists the tables of the private namespace.
func nftTables(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	return string(out)
}
