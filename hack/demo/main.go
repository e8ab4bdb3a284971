// Command demo runs the whole kube-clusterip stack on one machine and sends real packets through
// a ClusterIP: an etcd and kube-apiserver, the manager with every component (admission webhook,
// endpoints, nftables datapath), and a small stand-in for the kubelet that gives each Pod a
// network namespace, an address and an HTTP server that answers with the Pod's name. A real
// CoreDNS behind the kube-dns Service (10.96.0.10) answers names from our Services and
// EndpointSlices, and each Pod's processes get kubelet's resolv.conf and Service variables, so the
// walkthrough also reaches Services by name (curl http://backend-service).
//
// Everything runs inside namespaces the demo creates for itself (network, mount and PID): the
// demo's network namespace plays the node, the manager's nftables live there, Pods are further
// network namespaces joined to it by veth pairs. Nothing touches the host's network or nftables,
// and when the demo ends (or is interrupted) the kernel tears the namespaces down with it.
//
// Without root it prints the nftables ruleset the datapath would apply for the demo's Services.
//
//	make demo            # or: go run ./hack/demo --manager bin/kube-clusterip
//	make demo KEEP=1     # leave everything running, with a kubeconfig to explore it
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// options are the demo's command line.
type options struct {
	keep    bool
	manager string
	repo    string
}

func main() {
	o := options{}
	flag.BoolVar(&o.keep, "keep", false, "Leave everything running after the walkthrough, print how to use kubectl against it, and clean up on Ctrl-C.")
	flag.StringVar(&o.manager, "manager", "bin/kube-clusterip", "The manager binary (make build).")
	flag.StringVar(&o.repo, "repo", "", "The repository root, for config/crd and config/webhook (default: found from the working directory).")
	flag.Parse()

	var err error
	switch {
	case os.Getenv(podProcessEnv) != "":
		err = runPodProcess(os.Getenv(podProcessEnv))
	case os.Getenv(insideEnv) != "":
		err = runInside(o)
	case os.Geteuid() != 0:
		err = printRulesetWithoutRoot(os.Stdout)
	default:
		err = runOutside(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

// checkPrerequisites names everything the real demo needs that is missing, so that a newcomer
// learns it before any namespace is created.
func checkPrerequisites(o *options) error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return fmt.Errorf("KUBEBUILDER_ASSETS is not set: run 'make demo', or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	for _, binary := range []string{"kube-apiserver", "etcd", "coredns"} {
		if _, err := os.Stat(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), binary)); err != nil {
			return fmt.Errorf("%s is missing from KUBEBUILDER_ASSETS: run hack/envtest-assets.sh to build it (it runs hack/coredns-assets.sh too)", binary)
		}
	}
	manager, err := filepath.Abs(o.manager)
	if err != nil {
		return err
	}
	if _, err := os.Stat(manager); err != nil {
		return fmt.Errorf("manager binary %s: %w (run 'make build')", manager, err)
	}
	o.manager = manager
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("the nft binary is missing (apt-get install nftables): the datapath programs nftables through it")
	}
	if o.repo == "" {
		if o.repo, err = findRepoRoot(); err != nil {
			return err
		}
	}
	return nil
}

// findRepoRoot walks up from the working directory to the directory holding go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "config", "webhook", "manifests.yaml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the repository root (config/webhook/manifests.yaml) above the working directory: pass --repo")
		}
		dir = parent
	}
}
