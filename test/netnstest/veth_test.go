package netnstest

import (
	"fmt"
	"testing"
)

func TestVethRoutes(t *testing.T) {
	for _, tc := range []struct {
		name             string
		hostAddrs, addrs []string
		// what each end routes straight to its link, and the default routes inside
		hostRoutes, insideRoutes, gateways string
	}{{
		name:         "a /24 and a /64 on each end need no routes to the link, and route by family",
		hostAddrs:    []string{"10.244.3.1/24", "fd00:10:244:3::1/64"},
		addrs:        []string{"10.244.3.2/24", "fd00:10:244:3::2/64"},
		hostRoutes:   "[]",
		insideRoutes: "[]",
		gateways:     "[10.244.3.1 fd00:10:244:3::1]",
	}, {
		name:         "/32s on both ends, as CNI plugins do, route each other's address to the link",
		hostAddrs:    []string{"10.244.0.1/32"},
		addrs:        []string{"10.244.0.11/32"},
		hostRoutes:   "[10.244.0.11/32]",
		insideRoutes: "[10.244.0.1/32]",
		gateways:     "[10.244.0.1]",
	}, {
		name:         "no address inside: no route at all",
		hostAddrs:    []string{"192.168.50.1/32"},
		hostRoutes:   "[]",
		insideRoutes: "[]",
		gateways:     "[]",
	}, {
		name:         "an IPv4-only inside routes only IPv4, through the node's first IPv4 address",
		hostAddrs:    []string{"10.1.0.1/24", "10.2.0.1/24", "fd00::1/64"},
		addrs:        []string{"10.1.0.2/24"},
		hostRoutes:   "[]",
		insideRoutes: "[10.2.0.1/32]",
		gateways:     "[10.1.0.1]",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			hostAddrs, err := parseCIDRs(tc.hostAddrs)
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := parseCIDRs(tc.addrs)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ what, got, want string }{
				{"node side routes", fmt.Sprint(uncovered(addrs, hostAddrs)), tc.hostRoutes},
				{"routes inside", fmt.Sprint(uncovered(hostAddrs, addrs)), tc.insideRoutes},
				{"default routes inside", fmt.Sprint(gateways(hostAddrs, addrs)), tc.gateways},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %s, want %s", c.what, c.got, c.want)
				}
			}
		})
	}
}
