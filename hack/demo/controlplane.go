package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
)

// Where the manager listens inside the demo's network namespace (a fresh namespace: no port is
// taken).
const (
	webhookPort = 9443
	probeAddr   = "127.0.0.1:8081"
)

// controlPlane is etcd and kube-apiserver, started by envtest from KUBEBUILDER_ASSETS.
type controlPlane struct {
	env        *envtest.Environment
	config     *rest.Config
	client     kubernetes.Interface
	kubeconfig string
}

// startControlPlane starts etcd and kube-apiserver with the cluster's Service range, installs
// our CRDs and writes an admin kubeconfig into workDir. Their logs go to workDir too.
func startControlPlane(repo, workDir string) (*controlPlane, error) {
	logs, err := os.Create(filepath.Join(workDir, "control-plane.log"))
	if err != nil {
		return nil, err
	}
	env := controlplane.New(os.Getenv("KUBEBUILDER_ASSETS"), logs)
	env.CRDDirectoryPaths = []string{filepath.Join(repo, "config", "crd", "bases")}
	env.ErrorIfCRDPathMissing = true
	// Generous: under `make test` other suites' control planes share the 2 cores.
	env.ControlPlaneStartTimeout = time.Minute
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("start etcd and kube-apiserver (logs in %s): %w", logs.Name(), err)
	}
	cp := &controlPlane{env: env, kubeconfig: filepath.Join(workDir, "kubeconfig")}
	admin, err := controlplane.WriteAdminKubeconfig(env, "demo-admin", cp.kubeconfig)
	if err != nil {
		return cp, err
	}
	cp.config = rest.CopyConfig(admin)
	// The Endpoints API is deprecated and the API server says so on every call; the demo
	// reads Endpoints on purpose.
	cp.config.WarningHandler = rest.NoWarnings{}
	cp.client, err = kubernetes.NewForConfig(cp.config)
	return cp, err
}

func (cp *controlPlane) stop() error {
	if cp == nil || cp.env == nil {
		return nil
	}
	return cp.env.Stop()
}

// manager is the kube-clusterip binary with every component: the allocator with its admission
// webhook, the endpoints controllers and the datapath of the demo node.
type manager struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when the process has exited
}

// startManager writes a webhook serving certificate, starts the manager and waits until it is
// ready (which includes its webhook server listening).
func startManager(ctx context.Context, binary, workDir, kubeconfig string) (*manager, []byte, error) {
	certDir := filepath.Join(workDir, "webhook-certs")
	caBundle, err := writeServingCert(certDir)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook certificate: %w", err)
	}
	m := &manager{log: filepath.Join(workDir, "manager.log"), exited: make(chan struct{})}
	logs, err := os.Create(m.log)
	if err != nil {
		return nil, nil, err
	}
	m.cmd = exec.Command(binary,
		"--kubeconfig="+kubeconfig,
		"--controllers=allocator,endpoints",
		"--webhook-cert-dir="+certDir,
		"--webhook-port="+strconv.Itoa(webhookPort),
		"--datapath",
		// The demo's node shares the host's conntrack limit: leave it (the timeouts are the
		// demo namespace's own).
		"--conntrack-max-per-core=0",
		"--node-name="+nodeName,
		"--cluster-cidr="+clusterCIDR,
		"--service-cluster-ip-range="+serviceCIDR,
		"--health-probe-bind-address="+probeAddr,
		"--metrics-bind-address=0",
	)
	m.cmd.Stdout, m.cmd.Stderr = logs, logs
	if err := m.cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() { _ = m.cmd.Wait(); close(m.exited) }()
	if err := waitFor(ctx, 30*time.Second, m.ready); err != nil {
		m.stop()
		return nil, nil, fmt.Errorf("the manager did not become ready (log: %s): %w", m.log, err)
	}
	return m, caBundle, nil
}

func (m *manager) ready(ctx context.Context) (bool, error) {
	select {
	case <-m.exited:
		return false, errors.New("the manager exited")
	default:
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+probeAddr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, nil
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// stop asks the manager to exit and kills it if it does not within a few seconds.
func (m *manager) stop() {
	if m == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 as tls.crt and tls.key into
// dir, and returns it PEM-encoded: the certificate is its own CA, so it is also the caBundle
// the API server verifies the webhook with.
func writeServingCert(dir string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kube-clusterip-webhook"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		return nil, err
	}
	return certPEM, os.WriteFile(filepath.Join(dir, "tls.key"), keyPEM, 0o600)
}

// installWebhooks creates the generated webhook configurations (config/webhook/manifests.yaml),
// pointed at the manager on 127.0.0.1 instead of an in-cluster Service.
func installWebhooks(ctx context.Context, client kubernetes.Interface, repo string, caBundle []byte) ([]string, error) {
	manifests, err := os.ReadFile(filepath.Join(repo, "config", "webhook", "manifests.yaml"))
	if err != nil {
		return nil, err
	}
	clientConfig := func(path *string) admissionregistrationv1.WebhookClientConfig {
		url := fmt.Sprintf("https://127.0.0.1:%d%s", webhookPort, *path)
		return admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	var installed []string
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return installed, nil
		}
		if err != nil {
			return installed, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return installed, fmt.Errorf("decode config/webhook/manifests.yaml: %w", err)
		}
		switch config := obj.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			for i := range config.Webhooks {
				config.Webhooks[i].ClientConfig = clientConfig(config.Webhooks[i].ClientConfig.Service.Path)
				installed = append(installed, "mutating "+*config.Webhooks[i].ClientConfig.URL)
			}
			_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, config, metav1.CreateOptions{})
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			for i := range config.Webhooks {
				config.Webhooks[i].ClientConfig = clientConfig(config.Webhooks[i].ClientConfig.Service.Path)
				installed = append(installed, "validating "+*config.Webhooks[i].ClientConfig.URL)
			}
			_, err = client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, config, metav1.CreateOptions{})
		}
		if err != nil {
			return installed, fmt.Errorf("install webhook configuration: %w", err)
		}
	}
}

// waitFor polls cond every 50 ms until it is true, fails, or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still waiting after %s", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
