package diagnose

import (
	"errors"
	"flag"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIsInvocation(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want bool
	}{
		{name: "the manager with flags", argv: []string{"/usr/bin/kube-clusterip", "--controllers=endpoints"}, want: false},
		{name: "the diagnose subcommand", argv: []string{"kube-clusterip", "diagnose", "svc/backend"}, want: true},
		{name: "installed as the kubectl plugin", argv: []string{"/usr/local/bin/kubectl-clusterip", "diagnose", "svc/backend"}, want: true},
		{name: "the plugin without a subcommand still answers (with usage)", argv: []string{"kubectl-clusterip"}, want: true},
		{name: "no arguments at all", argv: nil, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsInvocation(tt.argv); got != tt.want {
				t.Errorf("IsInvocation(%q) = %t, want %t", tt.argv, got, tt.want)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    *Options
		wantErr bool
	}{
		{
			name: "flags after the Service, as kubectl users type them",
			args: []string{"diagnose", "svc/backend", "-n", "shop", "-o", "json"},
			want: &Options{ServiceName: "backend", Namespace: "shop", Output: "json", ClusterDomain: DefaultClusterDomain, NFT: "nft"},
		},
		{
			name: "long flags before the Service",
			args: []string{"diagnose", "--namespace=shop", "--kubeconfig", "/tmp/kc", "--datapath", "--node-name", "node-a", "service/backend"},
			want: &Options{ServiceName: "backend", Namespace: "shop", Kubeconfig: "/tmp/kc", Output: "text", ClusterDomain: DefaultClusterDomain, Datapath: true, NodeName: "node-a", NFT: "nft"},
		},
		{
			name: "a bare name is a Service",
			args: []string{"diagnose", "backend", "--as", "alice"},
			want: &Options{ServiceName: "backend", As: "alice", Output: "text", ClusterDomain: DefaultClusterDomain, NFT: "nft"},
		},
		{name: "another kind", args: []string{"diagnose", "deploy/backend"}, wantErr: true},
		{name: "two Services", args: []string{"diagnose", "svc/a", "svc/b"}, wantErr: true},
		{name: "no Service", args: []string{"diagnose"}, wantErr: true},
		{name: "an unknown output", args: []string{"diagnose", "svc/a", "-o", "yaml"}, wantErr: true},
		{name: "an unknown flag", args: []string{"diagnose", "svc/a", "--bogus"}, wantErr: true},
		{name: "another subcommand", args: []string{"frobnicate"}, wantErr: true},
		{name: "a Service name that is not a DNS label (underscore)", args: []string{"diagnose", "svc/backend_service"}, wantErr: true},
		{name: "a Service name that is not a DNS label (upper case)", args: []string{"diagnose", "svc/Backend"}, wantErr: true},
		{name: "a DNS Service without namespace", args: []string{"diagnose", "svc/a", "--dns", "--dns-service", "kube-dns"}, wantErr: true},
		{name: "a DNS server without port", args: []string{"diagnose", "svc/a", "--dns", "--dns-server", "10.96.0.10"}, wantErr: true},
	}
	t.Setenv("NODE_NAME", "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseArgs(%q) error = %v, want error %t", tt.args, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseArgs(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
	if _, err := ParseArgs([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("ParseArgs(-h) = %v, want flag.ErrHelp", err)
	}
}
