package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NodePortAddressesPrimary, in --nodeport-addresses, stands for the node's primary IPs
// (kube-proxy's default in nftables mode).
const NodePortAddressesPrimary = "primary"

// ResolveNodePortAddresses turns kube-proxy's --nodeport-addresses into
// Config.NodePortAddresses: "primary" (or nothing) stands for nodeIPs, a CIDR for the
// local addresses inside it. A zero-length CIDR (0.0.0.0/0, ::/0) means every local
// address, returned as nil.
func ResolveNodePortAddresses(spec, nodeIPs []string, localAddrs []netip.Addr) ([]string, error) {
	if len(spec) == 0 {
		spec = []string{NodePortAddressesPrimary}
	}
	var out []string
	add := func(a netip.Addr) {
		if s := a.Unmap().String(); !a.IsLoopback() && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, item := range spec {
		item = strings.TrimSpace(item)
		if item == NodePortAddressesPrimary {
			for _, ip := range nodeIPs {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return nil, fmt.Errorf("node IP %q: %w", ip, err)
				}
				add(a)
			}
			continue
		}
		prefix, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("--nodeport-addresses: %q is neither %q nor a CIDR: %w", item, NodePortAddressesPrimary, err)
		}
		if prefix.Bits() == 0 {
			return nil, nil
		}
		for _, a := range localAddrs {
			if prefix.Contains(a.Unmap()) {
				add(a)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--nodeport-addresses %v matches no address of this node: NodePorts would answer nowhere", spec)
	}
	return out, nil
}
