package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Keywords of --nodeport-addresses, as kube-proxy v1.37 reads them.
const (
	// NodePortAddressesPrimary stands for the node's primary IPs (kube-proxy's default in
	// nftables mode).
	NodePortAddressesPrimary = "primary"
	// NodePortAddressesAll stands for 0.0.0.0/0 and ::/0: every local address.
	NodePortAddressesAll = "all"
	// NodePortAddressesLocalhost stands for 127.0.0.0/8 and ::1. Loopback addresses never
	// serve NodePorts here, as in kube-proxy's nftables mode while its alpha feature gate
	// KubeProxyNFTablesLocalhostNodePorts is off (the default in v1.37), so it adds none.
	NodePortAddressesLocalhost = "localhost"
)

// ResolveNodePortAddresses turns kube-proxy's --nodeport-addresses into
// Config.NodePortAddresses: "primary" (or nothing) stands for nodeIPs, a CIDR for the
// local addresses inside it. A zero-length CIDR (0.0.0.0/0, ::/0, or "all") means every
// local address, returned as nil. Loopback addresses are never NodePort addresses.
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
		switch item {
		case NodePortAddressesAll:
			return nil, nil
		case NodePortAddressesLocalhost:
			continue
		case NodePortAddressesPrimary:
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
			return nil, fmt.Errorf("--nodeport-addresses: %q is neither a CIDR nor one of %q, %q, %q: %w",
				item, NodePortAddressesPrimary, NodePortAddressesAll, NodePortAddressesLocalhost, err)
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
		return nil, fmt.Errorf("--nodeport-addresses %v matches no address of this node but loopback, which never serves NodePorts: NodePorts would answer nowhere", spec)
	}
	return out, nil
}
