package datapath

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestResolveNodePortAddresses(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.168.1.5"),
		netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("fd00::5")}
	node := []string{"192.168.1.5", "fd00::5"}
	cases := []struct {
		name    string
		spec    []string
		want    []string
		wantErr bool
	}{
		{name: "unset: the primary IPs", spec: nil, want: node},
		{name: "primary", spec: []string{"primary"}, want: node},
		{name: "a CIDR: local addresses inside it", spec: []string{"10.0.0.0/8"}, want: []string{"10.0.0.7"}},
		{name: "loopback is never a NodePort address", spec: []string{"127.0.0.0/8", "10.0.0.0/8"}, want: []string{"10.0.0.7"}},
		{name: "primary and a CIDR", spec: []string{"primary", "10.0.0.0/8"}, want: []string{"192.168.1.5", "fd00::5", "10.0.0.7"}},
		{name: "0.0.0.0/0: every local address", spec: []string{"0.0.0.0/0"}, want: nil},
		{name: "all: every local address", spec: []string{"all"}, want: nil},
		{name: "localhost adds no address", spec: []string{"localhost", "10.0.0.0/8"}, want: []string{"10.0.0.7"}},
		{name: "localhost alone answers nowhere", spec: []string{"localhost"}, wantErr: true},
		{name: "no address matches", spec: []string{"172.16.0.0/12"}, wantErr: true},
		{name: "not a CIDR", spec: []string{"eth0"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveNodePortAddresses(tc.spec, node, local)
			if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
