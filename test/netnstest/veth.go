package netnstest

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VethNetns is a network namespace joined to the calling thread's by a veth pair, as a CNI
// plugin attaches a pod: HostDev stays in the calling namespace, eth0 is inside. Each end routes
// the other end's addresses that no subnet of its own covers (in a family it has an address of)
// straight to its link, and eth0 routes everything of a family it has an address of through
// HostDev's first address of that family, so that every packet leaving the namespace crosses the
// calling namespace's hooks.
type VethNetns struct {
	Name      string   // the namespace's name under /run/netns (for `ip netns exec`), or "" for none
	HostDev   string   // the end in the calling namespace; the other is HostDev+"p" until renamed eth0
	HostAddrs []string // CIDRs of HostDev
	Addrs     []string // CIDRs of eth0

	NS netns.NsHandle // set by Create
}

// Create makes the namespace, the veth pair, their addresses and routes. On error it deletes what
// it made.
func (v *VethNetns) Create() error {
	hostAddrs, err := parseCIDRs(v.HostAddrs)
	if err != nil {
		return err
	}
	addrs, err := parseCIDRs(v.Addrs)
	if err != nil {
		return err
	}
	// The outside end goes to the calling thread's namespace: keep to that thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = switched(func() (err error) { v.NS, err = newNetns(v.Name); return err }, nil)
	if err != nil {
		return fmt.Errorf("new network namespace: %w", err)
	}
	if err := v.join(hostAddrs, addrs); err != nil {
		v.Delete()
		return err
	}
	return nil
}

func newNetns(name string) (netns.NsHandle, error) {
	if name == "" {
		return netns.New()
	}
	return netns.NewNamed(name)
}

// join adds the veth pair, moves its inside end into the namespace and configures the outside
// end.
func (v *VethNetns) join(hostAddrs, addrs []*net.IPNet) error {
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.HostDev}, PeerName: v.HostDev + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", v.HostDev, err)
	}
	peer, err := netlink.LinkByName(v.HostDev + "p")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsFd(peer, int(v.NS)); err != nil {
		return err
	}
	host, err := netlink.LinkByName(v.HostDev)
	if err != nil {
		return err
	}
	for _, a := range hostAddrs {
		if err := netlink.AddrAdd(host, noDAD(a)); err != nil {
			return fmt.Errorf("node side address %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	for _, dst := range uncovered(addrs, hostAddrs) {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: host.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route %s to %s: %w", dst, v.HostDev, err)
		}
	}
	return v.configureInside(hostAddrs, addrs)
}

// configureInside names the namespace's end eth0, addresses it, and routes through the node.
func (v *VethNetns) configureInside(hostAddrs, addrs []*net.IPNet) error {
	h, err := netlink.NewHandleAt(v.NS)
	if err != nil {
		return err
	}
	defer h.Close()
	eth, err := h.LinkByName(v.HostDev + "p")
	if err != nil {
		return err
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := h.AddrAdd(eth, noDAD(a)); err != nil {
			return fmt.Errorf("address %s: %w", a, err)
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, l := range []netlink.Link{lo, eth} {
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	index := eth.Attrs().Index
	for _, dst := range uncovered(hostAddrs, addrs) {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route to the node %s: %w", dst, err)
		}
	}
	for _, gw := range gateways(hostAddrs, addrs) {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// Delete deletes the veth pair (deleting one end deletes both) and the namespace's name, and
// closes it: the namespace goes once nothing else holds it.
func (v *VethNetns) Delete() {
	if l, err := netlink.LinkByName(v.HostDev); err == nil {
		_ = netlink.LinkDel(l)
	}
	if v.Name != "" {
		_ = netns.DeleteNamed(v.Name)
	}
	if v.NS.IsOpen() {
		v.NS.Close()
	}
}

// uncovered returns, as host routes, the addresses of other that no subnet of own contains, of
// the families own has addresses of: the kernel needs a route to know they are on the link.
func uncovered(other, own []*net.IPNet) []*net.IPNet {
	var dsts []*net.IPNet
	for _, a := range other {
		if hasFamily(own, a.IP.To4() != nil) && !anyContains(own, a.IP) {
			dsts = append(dsts, hostNet(a.IP))
		}
	}
	return dsts
}

// hostNet returns ip's /32 or /128.
func hostNet(ip net.IP) *net.IPNet {
	if v4 := ip.To4(); v4 != nil {
		return &net.IPNet{IP: v4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

func anyContains(nets []*net.IPNet, ip net.IP) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// gateways returns, for each family addrs has an address of, the first host address of that
// family, in the order of hostAddrs.
func gateways(hostAddrs, addrs []*net.IPNet) []net.IP {
	var gws []net.IP
	seen := map[bool]bool{}
	for _, h := range hostAddrs {
		v4 := h.IP.To4() != nil
		if seen[v4] || !hasFamily(addrs, v4) {
			continue
		}
		seen[v4] = true
		gws = append(gws, h.IP)
	}
	return gws
}

func hasFamily(nets []*net.IPNet, v4 bool) bool {
	for _, n := range nets {
		if (n.IP.To4() != nil) == v4 {
			return true
		}
	}
	return false
}

// parseCIDRs parses "address/prefix" strings, keeping the address (not the network's).
func parseCIDRs(cidrs []string) ([]*net.IPNet, error) {
	var nets []*net.IPNet
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", c, err)
		}
		nets = append(nets, a.IPNet)
	}
	return nets, nil
}

// noDAD returns a as an address that skips duplicate address detection: nothing else is on
// the link, and an IPv6 address in DAD cannot be used for a second or so.
func noDAD(a *net.IPNet) *netlink.Addr {
	return &netlink.Addr{IPNet: a, Flags: unix.IFA_F_NODAD}
}

// MustAddr returns cidr ("address/prefix") as an address that skips duplicate address detection.
func MustAddr(cidr string) *netlink.Addr {
	nets, err := parseCIDRs([]string{cidr})
	if err != nil {
		panic(err)
	}
	return noDAD(nets[0])
}
