package ipam

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/test/fuzzbytes"
)

// FuzzServiceCIDRs builds pools and ServiceCIDRs inside 10.250.0.0/24 from random bytes (nested,
// adjacent, overlapping, some not Ready), then assigns addresses, dynamic and requested, and
// checks what the registry must never get wrong: every address it grants is one kube-apiserver
// accepts (inside a Ready ServiceCIDR, and not that ServiceCIDR's network or broadcast address),
// is not another tenant pool's (the narrowest pool CIDR holding it is the namespace's, or none:
// the pool default's), and is granted once.
func FuzzServiceCIDRs(f *testing.F) {
	f.Add([]byte{2, 0, 25, 1, 0, 26, 2, 0, 26, 1, 64, 26, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 0, 24, 3, 0, 25, 1, 128, 25, 0, 0, 24, 0, 255, 127, 128, 129, 0, 1, 2})
	universe := netip.MustParsePrefix("10.250.0.0/24")
	f.Fuzz(func(t *testing.T, data []byte) {
		r := fuzzbytes.New(data)
		prefix := func() netip.Prefix {
			bits := 24 + r.Intn(7) // /24 to /30
			p, _ := netip.AddrFrom4([4]byte{10, 250, 0, r.Byte()}).Prefix(bits)
			return p
		}
		var pools []ipamv1alpha1.ClusterIPPool
		for i := range 1 + r.Intn(3) {
			pools = append(pools, testPool(fmt.Sprintf("team-%d", i), []string{prefix().String()},
				map[string]string{"team": fmt.Sprint(i)}))
		}
		cidrs := []ServiceCIDR{kubernetesCIDR}
		for i := range r.Intn(5) {
			cidrs = append(cidrs, ServiceCIDR{Name: fmt.Sprintf("sc-%d", i), CIDRs: []netip.Prefix{prefix()}, Ready: r.Byte()%4 != 0})
		}
		reg := NewRegistry(time.Minute, nil, nil)
		reg.SetPools(append([]ipamv1alpha1.ClusterIPPool{testPool("default", []string{"10.96.0.0/26"}, nil)}, pools...))
		reg.SetServiceCIDRs(cidrs)

		granted := map[netip.Addr]string{}
		for i := 0; !r.Done() && i < 300; i++ {
			team := r.Intn(len(pools))
			req := AssignRequest{Service: key("ns", fmt.Sprintf("svc-%d", i)), NamespaceLabels: labels.Set{"team": fmt.Sprint(team)}}
			if !r.Bool() {
				req.Requested = []netip.Addr{netip.AddrFrom4([4]byte{10, 250, 0, r.Byte()})}
			}
			got, err := reg.Assign(req)
			if err != nil {
				continue
			}
			for _, ip := range got {
				if !universe.Contains(ip) {
					continue // the default pool's, outside the ServiceCIDRs under test
				}
				if !apiServerAccepts(cidrs, ip) {
					t.Fatalf("granted %s, which kube-apiserver refuses: ServiceCIDRs %v, pools %v", ip, cidrs, pools)
				}
				if owner := ownerTeam(pools, ip); owner >= 0 && owner != team {
					t.Fatalf("granted %s to team-%d, an address of team-%d's CIDR %v", ip, team, owner, pools[owner].Spec.CIDRs)
				}
				if prev, ok := granted[ip]; ok {
					t.Fatalf("granted %s twice: to %s and to %s", ip, prev, req.Service)
				}
				granted[ip] = req.Service.String()
			}
		}
	})
}

// apiServerAccepts says whether kube-apiserver allocates ip: some Ready ServiceCIDR holds it,
// other than as its network or (IPv4) broadcast address.
func apiServerAccepts(cidrs []ServiceCIDR, ip netip.Addr) bool {
	for _, sc := range cidrs {
		for _, p := range sc.CIDRs {
			if sc.Ready && p.Contains(ip) && ip != p.Masked().Addr() && ip != lastAddr(p) {
				return true
			}
		}
	}
	return false
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		a[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(a)
}

// ownerTeam returns the index of the pool whose CIDR is the narrowest holding ip (a pool
// repeating an earlier pool's CIDR is invalid and owns nothing), or -1: an address of the pool
// default, which every namespace may use.
func ownerTeam(pools []ipamv1alpha1.ClusterIPPool, ip netip.Addr) int {
	owner, bits := -1, -1
	seen := map[netip.Prefix]bool{}
	for i, p := range pools {
		c := netip.MustParsePrefix(p.Spec.CIDRs[0]).Masked()
		if seen[c] {
			continue
		}
		seen[c] = true
		if c.Contains(ip) && c.Bits() > bits {
			owner, bits = i, c.Bits()
		}
	}
	return owner
}
