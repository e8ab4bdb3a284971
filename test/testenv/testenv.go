// Package testenv starts the real control plane our envtest suites run against: kube-apiserver
// and etcd built offline by hack/envtest-assets.sh, with the cluster's Service range set to
// 10.96.0.0/12 (envtest's own default is 10.0.0.0/24).
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
)

// ServiceClusterIPRange is the apiserver's --service-cluster-ip-range in every suite.
const ServiceClusterIPRange = controlplane.ServiceClusterIPRange

// New returns an envtest environment wired to the offline-built binaries. Without them it panics
// with an actionable message (Ginkgo reports it) rather than letting envtest fail obscurely.
func New() *envtest.Environment {
	assets, err := Assets()
	if err != nil {
		panic(err)
	}
	env := controlplane.New(assets, ginkgo.GinkgoWriter)
	env.ErrorIfCRDPathMissing = true
	return env
}

// The waiting times every suite uses.
const (
	// EventuallyTimeout is how long a spec waits for the code under test: a sync takes
	// milliseconds, but a loaded 2-core machine stalls for seconds.
	EventuallyTimeout = 30 * time.Second
	// EventuallyPollingInterval: poll often, a sync takes milliseconds.
	EventuallyPollingInterval = 50 * time.Millisecond
	// ConsistentlyDuration is how long a spec holds that something does not happen.
	ConsistentlyDuration = 2 * time.Second
	// RestartTimeout is how long a spec waits across a restart of the manager or the API server.
	RestartTimeout = 90 * time.Second
)

// SuiteDefaults sets the waiting times above as Gomega's defaults.
func SuiteDefaults() {
	setWaitingTimes(EventuallyTimeout, EventuallyPollingInterval, ConsistentlyDuration)
}

func setWaitingTimes(eventually, polling, consistently time.Duration) {
	gomega.SetDefaultEventuallyTimeout(eventually)
	gomega.SetDefaultEventuallyPollingInterval(polling)
	gomega.SetDefaultConsistentlyDuration(consistently)
	gomega.SetDefaultConsistentlyPollingInterval(polling)
}

// Waiting times of the suites that run the manager as a process next to the control plane and
// restart one or the other (test/reliability): they share 2 cores with both, so poll less often
// and wait longer.
const (
	ProcessPollingInterval      = 200 * time.Millisecond
	ProcessConsistentlyDuration = 3 * time.Second
)

// ProcessSuiteDefaults sets those waiting times (with RestartTimeout) as Gomega's defaults.
func ProcessSuiteDefaults() {
	setWaitingTimes(RestartTimeout, ProcessPollingInterval, ProcessConsistentlyDuration)
}

// ControllerSuiteDefaults sends controller-runtime's log to the spec's output and sets the
// suites' waiting times (SuiteDefaults).
func ControllerSuiteDefaults() {
	logf.SetLogger(zap.New(zap.WriteTo(ginkgo.GinkgoWriter), zap.UseDevMode(true)))
	SuiteDefaults()
}

// Assets returns the directory of the control plane binaries, or says how to get them.
func Assets() (string, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return "", fmt.Errorf("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', " +
			"or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	for _, binary := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, binary)); err != nil {
			return "", fmt.Errorf("%s is missing from KUBEBUILDER_ASSETS=%s: run hack/envtest-assets.sh to build it", binary, assets)
		}
	}
	return assets, nil
}

// CRDDirectory is the generated CRD directory of this module.
func CRDDirectory() string {
	return filepath.Join(RepoRoot(), "config", "crd", "bases")
}

// RepoRoot is the directory of this module's go.mod, found upwards from the working
// directory, so that suites at any depth find config/ and bin/.
func RepoRoot() string {
	start, _ := os.Getwd()
	for dir := start; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			return start
		}
	}
}

// Start starts the control plane and returns its admin config and a direct client (no cache)
// for scheme, failing the suite when either does not come up. edits adjust a copy of the config
// before the client is made from it (the returned config is that copy).
func Start(env *envtest.Environment, scheme *runtime.Scheme, edits ...func(*rest.Config)) (*rest.Config, client.Client) {
	ginkgo.GinkgoHelper()
	cfg, err := env.Start()
	gomega.Expect(err).NotTo(gomega.HaveOccurred(), "start kube-apiserver and etcd")
	if len(edits) > 0 {
		cfg = rest.CopyConfig(cfg)
		for _, edit := range edits {
			edit(cfg)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	gomega.Expect(err).NotTo(gomega.HaveOccurred(), "connect to kube-apiserver")
	return cfg, c
}
