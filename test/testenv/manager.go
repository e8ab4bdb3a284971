package testenv

import (
	"context"
	"net"
	"path/filepath"
	"strconv"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
)

// WithWebhooks makes env install this module's CRDs and webhook configurations (config/webhook),
// pointed at a local webhook server: WebhookServer(env) for a manager in the test's process.
func WithWebhooks(env *envtest.Environment) {
	env.CRDDirectoryPaths = []string{CRDDirectory()}
	env.WebhookInstallOptions = envtest.WebhookInstallOptions{
		Paths: []string{filepath.Join(RepoRoot(), "config", "webhook")},
	}
}

// WebhookServer is the webhook server the configurations WithWebhooks installed call.
func WebhookServer(env *envtest.Environment) webhook.Server {
	wio := &env.WebhookInstallOptions
	return webhook.NewServer(webhook.Options{Host: wio.LocalServingHost, Port: wio.LocalServingPort, CertDir: wio.LocalServingCertDir})
}

// WebhookAddress is host:port of that server.
func WebhookAddress(env *envtest.Environment) string {
	wio := &env.WebhookInstallOptions
	return net.JoinHostPort(wio.LocalServingHost, strconv.Itoa(wio.LocalServingPort))
}

// WaitForWebhookServer waits until the webhook server at WebhookAddress(env) accepts TLS
// connections: before that, the API server fails every call to the webhooks.
func WaitForWebhookServer(env *envtest.Environment) {
	ginkgo.GinkgoHelper()
	gomega.Expect(controlplane.AwaitTLS(WebhookAddress(env), EventuallyTimeout)).To(gomega.Succeed())
}

// Manager is a manager a suite started with StartManager.
type Manager struct {
	cancel context.CancelFunc
	done   chan error
}

// StartManager runs mgr.Start in the background until Stop.
func StartManager(mgr manager.Manager) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cancel: cancel, done: make(chan error, 1)}
	go func() {
		defer ginkgo.GinkgoRecover()
		m.done <- mgr.Start(ctx)
	}()
	return m
}

// Stop stops the manager and waits until mgr.Start has returned, without an error: a suite stops
// the control plane only after that.
func (m *Manager) Stop() {
	ginkgo.GinkgoHelper()
	if m == nil {
		return
	}
	m.cancel()
	gomega.Eventually(m.done).Should(gomega.Receive(gomega.Not(gomega.HaveOccurred())))
}
