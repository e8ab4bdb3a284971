package datapath

import (
	"fmt"
	"net"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// UDPServicePort is a UDP frontend of a Service (ClusterIP, external IP or load balancer
// IP and port; a NodePort when ServiceIP is "") and the endpoints serving it.
type UDPServicePort struct {
	ServiceIP string
	Port      int32
	// ServingEndpoints are the "ip:port" of the port's serving endpoints, terminating ones
	// included and whatever the traffic policies and topology say: as in kube-proxy, a
	// change of Service must not cut flows that a TCP connection would keep.
	ServingEndpoints []string
}

// UDPFlow is what the conntrack cleanup reads of an entry: where the client sent it and
// which address answers (the DNAT target).
type UDPFlow struct {
	OrigDstIP    string
	OrigDstPort  int32
	ReplySrcIP   string
	ReplySrcPort int32
}

// UDPFrontends indexes UDP frontends by address or NodePort for StaleFlow. UDP has no
// connection end: without cleanup, a client that keeps sending keeps reaching the old
// endpoint (or a black hole) for as long as it keeps the flow alive.
type UDPFrontends struct {
	byAddress  map[string]map[string]bool // "ip:port" of the frontend -> serving endpoints
	byNodePort map[int32]map[string]bool
}

// NewUDPFrontends indexes ports; a later port with the same frontend replaces an earlier one.
func NewUDPFrontends(ports []UDPServicePort) UDPFrontends {
	f := UDPFrontends{byAddress: map[string]map[string]bool{}, byNodePort: map[int32]map[string]bool{}}
	for _, p := range ports {
		f.add(p)
	}
	return f
}

func (f UDPFrontends) add(p UDPServicePort) {
	serving := setOf(p.ServingEndpoints)
	if p.ServiceIP == "" {
		// A NodePort is matched on its port alone, so without endpoints it would delete
		// flows that are not ours; kube-proxy skips it too.
		if len(serving) > 0 {
			f.byNodePort[p.Port] = serving
		} else {
			delete(f.byNodePort, p.Port)
		}
		return
	}
	f.byAddress[net.JoinHostPort(p.ServiceIP, strconv.Itoa(int(p.Port)))] = serving
}

// Len is the number of frontends indexed.
func (f UDPFrontends) Len() int { return len(f.byAddress) + len(f.byNodePort) }

// StaleFlow tells whether flow was sent to one of the frontends and answered by an address
// that no longer serves it.
func (f UDPFrontends) StaleFlow(flow UDPFlow) bool {
	answer := net.JoinHostPort(flow.ReplySrcIP, strconv.Itoa(int(flow.ReplySrcPort)))
	if serving, ok := f.byAddress[net.JoinHostPort(flow.OrigDstIP, strconv.Itoa(int(flow.OrigDstPort)))]; ok {
		return !serving[answer]
	}
	if serving, ok := f.byNodePort[flow.OrigDstPort]; ok {
		return !serving[answer]
	}
	return false
}

// ConntrackCleaner deletes conntrack entries.
type ConntrackCleaner interface {
	// DeleteStaleUDPFlows walks the family's conntrack table, deletes the UDP entries
	// frontends.StaleFlow names, and returns how many it deleted.
	DeleteStaleUDPFlows(family corev1.IPFamily, frontends UDPFrontends) (int, error)
}

// udpFrontendsToClean returns the frontends whose flows a sync from have to want must
// check: on a full sync all of want's (which also cleans what a restart left), on a
// partial one those of the changed Services; a frontend that went away keeps no serving
// endpoint.
func udpFrontendsToClean(have, want *Ruleset, changed []types.NamespacedName, full bool) UDPFrontends {
	var ports []UDPServicePort
	for _, rs := range []*Ruleset{have, want} {
		if rs == nil {
			continue
		}
		add := func(f *Fragment) {
			for _, p := range f.UDPPorts {
				if rs == have {
					p.ServingEndpoints = nil
				}
				ports = append(ports, p)
			}
		}
		if full {
			for _, f := range rs.Services {
				add(f)
			}
			continue
		}
		for _, key := range changed {
			if f := rs.Services[key]; f != nil {
				add(f)
			}
		}
	}
	return NewUDPFrontends(ports)
}

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

// DeleteStaleUDPFlows implements ConntrackCleaner with one walk of the family's table.
func (NetlinkConntrack) DeleteStaleUDPFlows(family corev1.IPFamily, frontends UDPFrontends) (int, error) {
	inet := netlink.InetFamily(unix.AF_INET)
	if family == corev1.IPv6Protocol {
		inet = unix.AF_INET6
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, inet, staleUDPFilter{frontends})
	if err != nil {
		return int(n), fmt.Errorf("delete stale %s UDP conntrack entries: %w", family, err)
	}
	return int(n), nil
}

// staleUDPFilter matches the conntrack entries UDPFrontends.StaleFlow names.
type staleUDPFilter struct{ frontends UDPFrontends }

func (s staleUDPFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	return flow.Forward.Protocol == unix.IPPROTO_UDP && s.frontends.StaleFlow(UDPFlow{
		OrigDstIP: flow.Forward.DstIP.String(), OrigDstPort: int32(flow.Forward.DstPort),
		ReplySrcIP: flow.Reverse.SrcIP.String(), ReplySrcPort: int32(flow.Reverse.SrcPort)})
}
