// Package config_test checks the kustomize manifests in config/ against a real kube-apiserver:
// every object is accepted, and the RBAC they grant is what each component needs and no more.
package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

var (
	env       *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client
	repoRoot  string
)

func TestConfig(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Install manifests suite")
}

var _ = BeforeSuite(func() {
	testenv.SuiteDefaults()
	repoRoot = testenv.RepoRoot()
	env = testenv.New()
	// Our own CRD is not preinstalled: installing it is part of what the manifests are tested for.
	env.CRDDirectoryPaths = []string{filepath.Join("testdata", "stub-crds.yaml")}
	cfg, k8sClient = testenv.Start(env, scheme.Scheme)
})

var _ = AfterSuite(func() {
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})

// kustomizeBuild renders a config/ directory with the kustomize that `make kustomize` installs.
func kustomizeBuild(dir string) []byte {
	GinkgoHelper()
	kustomize := filepath.Join(repoRoot, "bin", "kustomize")
	_, err := os.Stat(kustomize)
	Expect(err).NotTo(HaveOccurred(), "bin/kustomize is missing: run 'make kustomize' (make test does)")
	out, err := exec.Command(kustomize, "build", filepath.Join(repoRoot, dir)).Output()
	Expect(err).NotTo(HaveOccurred(), "kustomize build %s: %s", dir, stderrOf(err))
	return out
}

func stderrOf(err error) string {
	if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) {
		return string(exitErr.Stderr)
	}
	return ""
}

// decodeObjects splits a multi-document YAML stream into objects.
func decodeObjects(manifests []byte) []*unstructured.Unstructured {
	GinkgoHelper()
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	var objects []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); err != nil {
			Expect(err.Error()).To(Equal("EOF"))
			return objects
		}
		if len(obj.Object) > 0 {
			objects = append(objects, obj)
		}
	}
}

func describe(obj *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", obj.GetKind(), obj.GetNamespace(), obj.GetName())
}

// envtestAdmin is a cluster-admin user for kubectl.
func envtestAdmin() envtest.User {
	return envtest.User{Name: "config-test-admin", Groups: []string{"system:masters"}}
}
