package datapath

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// testNode is a "node" of its own inside the test's private namespace: a further network
// namespace with forwarding on, its own Proxier (its own NodeName and zone, as the node agent
// configures it) and pods attached to it. Nodes reach each other's pods over a veth link.
type testNode struct {
	name, zone string
	ns         netns.NsHandle
	proxier    *Proxier
	pods       []*testPod
}

func newTestNode(tb testing.TB, name, zone string) *testNode {
	tb.Helper()
	n := &testNode{name: name, zone: zone}
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if n.ns, err = netns.New(); err != nil {
			return err
		}
		return netns.Set(orig)
	}()
	if err != nil {
		tb.Fatalf("create node %s: %v", name, err)
	}
	tb.Cleanup(func() { n.ns.Close() }) // the namespace, its table and its links go with it
	err = inNetns(n.ns, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return err
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		n.proxier, err = New(Config{
			NodeName:     name,
			Zone:         zone,
			IPFamilies:   []corev1.IPFamily{corev1.IPv4Protocol},
			ClusterCIDRs: []string{clusterCIDRv4},
			ServiceCIDRs: []string{serviceCIDRv4},
		})
		return err
	})
	if err != nil {
		tb.Fatalf("set up node %s: %v", name, err)
	}
	return n
}

// addPod attaches a new pod to the node.
func (n *testNode) addPod(tb testing.TB, name string) *testPod {
	tb.Helper()
	var p *testPod
	if err := inNetns(n.ns, func() error { p = newPod(tb, name, ""); return nil }); err != nil {
		tb.Fatalf("pod %s on %s: %v", name, n.name, err)
	}
	n.pods = append(n.pods, p)
	return p
}

// sync hands the node's Proxier the complete set of Services and slices, in the node's
// namespace (nft and netlink act on the namespace of the calling thread).
func (n *testNode) sync(tb testing.TB, services []*corev1.Service, slices ...*discoveryv1.EndpointSlice) {
	tb.Helper()
	if err := inNetns(n.ns, func() error { return n.proxier.Sync(context.Background(), services, slices) }); err != nil {
		tb.Fatalf("sync %s: %v", n.name, err)
	}
}

// linkNodes joins two nodes with a veth pair (a: 192.168.60.1, b: 192.168.60.2) and routes
// each node's pod addresses to the other through it. Call it once all pods exist.
func linkNodes(tb testing.TB, a, b *testNode) {
	tb.Helper()
	const aIP, bIP = "192.168.60.1", "192.168.60.2"
	err := inNetns(a.ns, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "to-" + b.name}, PeerName: "to-" + a.name}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add link: %w", err)
		}
		peer, err := netlink.LinkByName("to-" + a.name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(b.ns)); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("link %s and %s: %v", a.name, b.name, err)
	}
	for _, side := range []struct {
		node, other *testNode
		ip, gw      string
	}{{a, b, aIP, bIP}, {b, a, bIP, aIP}} {
		err := inNetns(side.node.ns, func() error {
			link, err := netlink.LinkByName("to-" + side.other.name)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(link, mustAddr(side.ip+"/30")); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(link); err != nil {
				return err
			}
			for _, p := range side.other.pods {
				_, pod, _ := net.ParseCIDR(p.ip + "/32")
				if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: pod, Gw: net.ParseIP(side.gw)}); err != nil {
					return fmt.Errorf("route %s via %s: %w", pod, side.gw, err)
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("configure link on %s: %v", side.node.name, err)
		}
	}
}

// zoneEndpoint is a pod's endpoint as the endpoints controller publishes it for a
// PreferSameZone Service: ready ones hinted for their node's zone, others without hints.
func zoneEndpoint(p *testPod, node *testNode, ready bool) ep {
	e := ep{ip: p.ip, node: node.name, ready: ready, serving: ready}
	if ready {
		e.zones = []string{node.zone}
	}
	return e
}

// expectAnswersFrom makes 60 connections from client to addr and checks that each of want,
// and no other pod, answered.
func expectAnswersFrom(t *testing.T, client *testPod, addr string, want ...*testPod) {
	t.Helper()
	counts := countReplies(t, client, addr, 60)
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p.name] = true
		if counts[p.name] == 0 {
			t.Errorf("from %s: pod %s got no connection: %v", client.name, p.name, counts)
		}
	}
	for name := range counts {
		if !wanted[name] {
			t.Errorf("from %s: pod %s, outside the expected set, answered: %v", client.name, name, counts)
		}
	}
}

// Two nodes in two zones, each with its own Proxier (NodeName and zone of its own) fed the
// same Service and slice: a PreferSameZone Service keeps each node's clients on its zone's
// pods while one is ready there, and falls back to every ready pod once none is.
func TestPacketsStayInTheClientsZoneWithPreferSameZone(t *testing.T) {
	requireDatapath(t)
	nodeA, nodeB := newTestNode(t, "node-a", "zone-a"), newTestNode(t, "node-b", "zone-b")
	a1, a2 := nodeA.addPod(t, "zone-a-1"), nodeA.addPod(t, "zone-a-2")
	b1, b2 := nodeB.addPod(t, "zone-b-1"), nodeB.addPod(t, "zone-b-2")
	for _, p := range []*testPod{a1, a2, b1, b2} {
		p.serveTCP(t, 8080)
	}
	clientA, clientB := nodeA.addPod(t, "client-a"), nodeB.addPod(t, "client-b")
	linkNodes(t, nodeA, nodeB)

	svc := makeService("zonal-service", "10.96.7.10", tcp("", 80, 8080))
	svc.Spec.TrafficDistribution = knftables.PtrTo(corev1.ServiceTrafficDistributionPreferSameZone)
	publish := func(aReady bool) {
		slice := makeSlice(svc, "zonal-1", zoneEndpoint(a1, nodeA, aReady), zoneEndpoint(a2, nodeA, aReady),
			zoneEndpoint(b1, nodeB, true), zoneEndpoint(b2, nodeB, true))
		for _, n := range []*testNode{nodeA, nodeB} {
			n.sync(t, []*corev1.Service{svc}, slice)
		}
	}
	expectOnly := func(client *testPod, want ...*testPod) {
		t.Helper()
		expectAnswersFrom(t, client, "10.96.7.10:80", want...)
	}

	publish(true)
	expectOnly(clientA, a1, a2)
	expectOnly(clientB, b1, b2)

	start := time.Now()
	publish(false) // zone A has no ready pod left
	t.Logf("both nodes synced in %v", time.Since(start))
	expectOnly(clientA, b1, b2)
	expectOnly(clientB, b1, b2)

	publish(true) // zone A recovers: its clients go back to it
	expectOnly(clientA, a1, a2)
}

// Two nodes in one zone, a PreferSameNode Service (endpoints hinted for their zone and node):
// each node's clients stay on its own pods while one is ready there, then go to the other
// node's pods (same zone) once none is.
func TestPacketsStayOnTheClientsNodeWithPreferSameNode(t *testing.T) {
	requireDatapath(t)
	nodeA, nodeB := newTestNode(t, "node-a", "zone-a"), newTestNode(t, "node-b", "zone-a")
	a1, b1 := nodeA.addPod(t, "node-a-1"), nodeB.addPod(t, "node-b-1")
	a1.serveTCP(t, 8080)
	b1.serveTCP(t, 8080)
	clientA, clientB := nodeA.addPod(t, "client-a"), nodeB.addPod(t, "client-b")
	linkNodes(t, nodeA, nodeB)

	svc := makeService("local-first", "10.96.7.20", tcp("", 80, 8080))
	svc.Spec.TrafficDistribution = knftables.PtrTo(corev1.ServiceTrafficDistributionPreferSameNode)
	nodeEndpoint := func(p *testPod, node *testNode, ready bool) ep {
		e := zoneEndpoint(p, node, ready)
		if ready {
			e.nodes = []string{node.name}
		}
		return e
	}
	publish := func(aReady bool) {
		slice := makeSlice(svc, "local-first-1", nodeEndpoint(a1, nodeA, aReady), nodeEndpoint(b1, nodeB, true))
		for _, n := range []*testNode{nodeA, nodeB} {
			n.sync(t, []*corev1.Service{svc}, slice)
		}
	}

	publish(true)
	expectAnswersFrom(t, clientA, "10.96.7.20:80", a1)
	expectAnswersFrom(t, clientB, "10.96.7.20:80", b1)

	publish(false) // node A has no ready pod left: its clients go to node B, in the same zone
	expectAnswersFrom(t, clientA, "10.96.7.20:80", b1)
}
