//go:build e2e

// Package e2e checks kube-clusterip installed on a real node (kubelet, containerd, real
// containers, no kube-proxy) as the README's install section says. hack/test-e2e.sh (make
// test-e2e) builds the node and runs these specs inside its namespaces; they are behind the
// build tag e2e, so make test never compiles them.
package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kube-clusterip on a real node")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(3 * time.Minute)
	SetDefaultEventuallyPollingInterval(time.Second)
	for _, v := range []string{"E2E_OVERLAY", "E2E_NODE", "KUBECONFIG", "REPO"} {
		Expect(os.Getenv(v)).NotTo(BeEmpty(), "$%s is unset: run the specs through make test-e2e", v)
	}
})

// run runs a command and returns its standard output; a failure carries its standard error.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &commandError{cmd: name + " " + strings.Join(args, " "), err: err, stderr: stderr.String()}
	}
	return string(out), nil
}

type commandError struct {
	cmd, stderr string
	err         error
}

func (e *commandError) Error() string { return e.cmd + ": " + e.err.Error() + ": " + e.stderr }

func kubectl(args ...string) (string, error) { return run("kubectl", args...) }

// mustKubectl runs kubectl and fails the spec on error.
func mustKubectl(args ...string) string {
	GinkgoHelper()
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// shell runs a pipeline through sh (kustomize build | kubectl apply).
func shell(script string) (string, error) { return run("sh", "-ec", script) }
