package datapath

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
)

// StaleUDPFlow names conntrack entries to delete: UDP flows sent to ServiceIP:Port (any
// local address when ServiceIP is "": a NodePort) that were DNATed to EndpointIP, which no longer serves that port. UDP has no connection
// end, so without this a client that keeps sending would keep reaching the old
// endpoint (or a black hole) for as long as it keeps the flow alive.
type StaleUDPFlow struct {
	ServiceIP  string
	Port       int32
	EndpointIP string
}

// ConntrackCleaner deletes conntrack entries.
type ConntrackCleaner interface {
	// DeleteUDPFlows deletes the entries of the flows and returns how many it deleted.
	DeleteUDPFlows(flows []StaleUDPFlow) (int, error)
}

// StaleUDPFlows compares the UDP Service ports of two rulesets (only Services whose
// fragment changed) and returns the flows whose endpoint went away, including those of
// Service ports that vanished or lost all their endpoints. TCP and SCTP are left alone:
// their endpoints close the connections themselves.
func StaleUDPFlows(have, want *Ruleset) []StaleUDPFlow {
	return staleUDPFlows(have, want, unionKeys(have, want))
}

// staleUDPFlows is StaleUDPFlows restricted to the given Services.
func staleUDPFlows(have, want *Ruleset, keys []types.NamespacedName) []StaleUDPFlow {
	if have == nil {
		return nil
	}
	var out []StaleUDPFlow
	for _, key := range keys {
		old, next := have.Services[key], want.Services[key]
		if old == nil || next == old {
			continue
		}
		current := map[string]map[string]bool{}
		if next != nil {
			for _, p := range next.UDPPorts {
				current[udpPortID(p)] = setOf(p.EndpointIPs)
			}
		}
		for _, p := range old.UDPPorts {
			for _, ip := range p.EndpointIPs {
				if !current[udpPortID(p)][ip] {
					out = append(out, StaleUDPFlow{ServiceIP: p.ServiceIP, Port: p.Port, EndpointIP: ip})
				}
			}
		}
	}
	return out
}

func udpPortID(p UDPServicePort) string { return fmt.Sprintf("%s/%d", p.ServiceIP, p.Port) }

func setOf(items []string) map[string]bool {
	out := make(map[string]bool, len(items))
	for _, s := range items {
		out[s] = true
	}
	return out
}

// NetlinkConntrack deletes conntrack entries through netlink, in the network namespace
// of the calling thread.
type NetlinkConntrack struct{}

// DeleteUDPFlows implements ConntrackCleaner with one table walk per IP family.
func (NetlinkConntrack) DeleteUDPFlows(flows []StaleUDPFlow) (int, error) {
	byFamily := map[netlink.InetFamily][]netlink.CustomConntrackFilter{}
	for _, f := range flows {
		filter, family, err := udpFlowFilter(f)
		if err != nil {
			return 0, err
		}
		byFamily[family] = append(byFamily[family], filter)
	}
	total := 0
	for family, filters := range byFamily {
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, filters...)
		total += int(n)
		if err != nil {
			return total, fmt.Errorf("delete %d stale UDP conntrack flows: %w", len(filters), err)
		}
	}
	return total, nil
}

func udpFlowFilter(f StaleUDPFlow) (*netlink.ConntrackFilter, netlink.InetFamily, error) {
	svcIP, epIP := net.ParseIP(f.ServiceIP), net.ParseIP(f.EndpointIP)
	if (svcIP == nil && f.ServiceIP != "") || epIP == nil {
		return nil, 0, fmt.Errorf("stale UDP flow %s:%d -> %s: invalid IP", f.ServiceIP, f.Port, f.EndpointIP)
	}
	family := netlink.InetFamily(unix.AF_INET)
	if epIP.To4() == nil {
		family = unix.AF_INET6
	}
	filter := &netlink.ConntrackFilter{}
	errs := []error{
		filter.AddProtocol(unix.IPPROTO_UDP),
		filter.AddPort(netlink.ConntrackOrigDstPort, uint16(f.Port)),
		filter.AddIP(netlink.ConntrackReplySrcIP, epIP),
	}
	if svcIP != nil {
		errs = append(errs, filter.AddIP(netlink.ConntrackOrigDstIP, svcIP))
	}
	for _, err := range errs {
		if err != nil {
			return nil, 0, fmt.Errorf("build conntrack filter for %s:%d -> %s: %w", f.ServiceIP, f.Port, f.EndpointIP, err)
		}
	}
	return filter, family, nil
}
