package diagnose

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
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

// parsedArgs is what TestParseArgs checks of the Options: the kubeconfig flags as kubectl's
// ConfigFlags hold them, flattened.
type parsedArgs struct {
	ServiceName, Namespace, Kubeconfig, Context, Server, As string
	Output, ClusterDomain                                   string
	Datapath                                                bool
	NodeName, NFT                                           string
}

func flatten(o *Options) *parsedArgs {
	if o == nil {
		return nil
	}
	f := o.ConfigFlags
	return &parsedArgs{ServiceName: o.ServiceName, Namespace: *f.Namespace, Kubeconfig: *f.KubeConfig, Context: *f.Context,
		Server: *f.APIServer, As: *f.Impersonate, Output: o.Output, ClusterDomain: o.ClusterDomain,
		Datapath: o.Datapath, NodeName: o.NodeName, NFT: o.NFT}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    *parsedArgs
		wantErr bool
	}{
		{
			name: "flags after the Service, as kubectl users type them",
			args: []string{"diagnose", "svc/backend", "-n", "shop", "-o", "json"},
			want: &parsedArgs{ServiceName: "backend", Namespace: "shop", Output: "json", ClusterDomain: DefaultClusterDomain, NFT: "nft"},
		},
		{
			name: "long flags before the Service",
			args: []string{"diagnose", "--namespace=shop", "--kubeconfig", "/tmp/kc", "--datapath", "--node-name", "node-a", "service/backend"},
			want: &parsedArgs{ServiceName: "backend", Namespace: "shop", Kubeconfig: "/tmp/kc", Output: "text", ClusterDomain: DefaultClusterDomain, Datapath: true, NodeName: "node-a", NFT: "nft"},
		},
		{
			name: "a bare name is a Service",
			args: []string{"diagnose", "backend", "--as", "alice"},
			want: &parsedArgs{ServiceName: "backend", As: "alice", Output: "text", ClusterDomain: DefaultClusterDomain, NFT: "nft"},
		},
		{name: "another kind", args: []string{"diagnose", "deploy/backend"}, wantErr: true},
		{name: "two Services", args: []string{"diagnose", "svc/a", "svc/b"}, wantErr: true},
		{name: "no Service", args: []string{"diagnose"}, wantErr: true},
		{
			name: "kubectl's kubeconfig flags and -o yaml",
			args: []string{"diagnose", "svc/backend", "--context", "staging", "--server", "https://192.0.2.1:6443", "-o", "yaml"},
			want: &parsedArgs{ServiceName: "backend", Context: "staging", Server: "https://192.0.2.1:6443", Output: "yaml", ClusterDomain: DefaultClusterDomain, NFT: "nft"},
		},
		{name: "an unknown output", args: []string{"diagnose", "svc/a", "-o", "wide"}, wantErr: true},
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
			if diff := cmp.Diff(tt.want, flatten(got)); diff != "" {
				t.Errorf("ParseArgs(%q) (-want +got):\n%s", tt.args, diff)
			}
		})
	}
	if _, err := ParseArgs([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("ParseArgs(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestHelpLikeAKubectlPlugin(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main(context.Background(), []string{"diagnose", "--help"}, &stdout, &stderr); code != ExitHealthy {
		t.Fatalf("diagnose --help exit status = %d, want %d; stderr: %s", code, ExitHealthy, stderr.String())
	}
	for _, want := range []string{"Usage:", "diagnose svc/NAME [-n NAMESPACE] [flags]", "Examples:", "Exit status: 0 healthy, 1 a problem was found, 2 usage or access error",
		"--kubeconfig string", "--context string", "-n, --namespace string", "-s, --server string", "--as string", "--token string",
		"-o, --output string", "--datapath", "--node-name string"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("diagnose --help does not show %q:\n%s", want, stdout.String())
		}
	}
}

func TestWriteYAML(t *testing.T) {
	report := Diagnose(Inputs{Service: backendService(), Pods: []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true, kit.TCPContainerPort("http", 8080))}})
	var out bytes.Buffer
	if err := Write(&out, report, "yaml"); err != nil {
		t.Fatalf("Write yaml: %v", err)
	}
	for _, want := range []string{"verdict: problems", "- check: endpoints", "severity: PROBLEM", "dnsNames:", "- backend.shop.svc.cluster.local"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the YAML report does not hold %q:\n%s", want, out.String())
		}
	}
	var back Report
	if err := yaml.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("read the YAML report back: %v", err)
	}
	if diff := cmp.Diff(report, &back); diff != "" {
		t.Errorf("the YAML report read back differs (-written +read):\n%s", diff)
	}
}
