// Package controlplane starts the control plane of the suites (through test/testenv), the
// benchmarks and the demo: kube-apiserver and etcd built offline by hack/envtest-assets.sh, with
// the cluster's Service range set to 10.96.0.0/12 (envtest's own default is 10.0.0.0/24). It does
// not import Ginkgo, so that programs (hack/demo, hack/bench-compare) can use it.
package controlplane

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// ServiceClusterIPRange is the apiserver's --service-cluster-ip-range everywhere.
const ServiceClusterIPRange = "10.96.0.0/12"

// DualStackServiceClusterIPRange is the range of the control planes that test IPv6 Services.
const DualStackServiceClusterIPRange = ServiceClusterIPRange + ",fd00:10:96::/112"

// New is the one control plane of the suites, the benchmarks and the demo: an envtest
// environment running kube-apiserver and etcd from assets, with the suites' Service range, both
// writing their output to out.
func New(assets string, out io.Writer) *envtest.Environment {
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.Out, apiServer.Err = out, out
	apiServer.Configure().Set("service-cluster-ip-range", ServiceClusterIPRange)
	env.ControlPlane.Etcd = &envtest.Etcd{Out: out, Err: out}
	return env
}

// DiscardLogs sends controller-runtime's own log (envtest's included) nowhere, for a program
// or test that does not set a logger of its own: controller-runtime otherwise complains, with a
// stack trace, that none was set.
func DiscardLogs() { log.SetLogger(logr.Discard()) }

// WriteAdminKubeconfig writes a kubeconfig of a new user in system:masters to path, for the
// programs a test runs as a user would (kubectl, diagnose, upstream's components), and returns
// that user's client config.
func WriteAdminKubeconfig(env *envtest.Environment, user, path string) (*rest.Config, error) {
	admin, err := env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("add user %s: %w", user, err)
	}
	data, err := admin.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of user %s: %w", user, err)
	}
	return admin.Config(), os.WriteFile(path, data, 0o600)
}

// AwaitTLS waits until a TLS server accepts connections at addr (a webhook server that has
// loaded its certificate), polling until timeout.
func AwaitTLS(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a local test server, no secret crosses it
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("TLS server at %s not answering after %s: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
