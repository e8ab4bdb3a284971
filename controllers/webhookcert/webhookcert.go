// Package webhookcert lets the manager keep its admission webhook's serving certificate itself,
// so that an install needs no cert-manager: a self-signed CA and serving certificate in a Secret
// (mounted at the webhook's certificate directory), renewed before they expire, and the CA
// written into the webhook configurations' caBundle (github.com/open-policy-agent/cert-controller).
//
// Every replica runs it (no leader election): they agree through the one Secret, where a write
// based on a stale read is refused by the API server and retried from the fresh one, so several
// replicas serve with the same certificate.
package webhookcert

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// Options name what the certificate is for and where it lives.
type Options struct {
	// Secret holds the CA and the serving certificate; it must exist (the install ships it
	// empty) and be mounted at CertDir.
	Secret types.NamespacedName
	// CertDir is where the Secret is mounted (the webhook server's certificate directory).
	CertDir string
	// Service is the webhook Service's name, in Secret's namespace: the certificate is for
	// <Service>.<namespace>.svc (and .svc.cluster.local).
	Service string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration receive the CA.
	MutatingWebhookConfiguration   string
	ValidatingWebhookConfiguration string
}

// StartWhenReady wraps the manager's webhook server so that it starts once ready is closed (by
// the rotator that Setup adds, when the certificate is in CertDir and the CA in both webhook
// configurations).
func StartWhenReady(server webhook.Server, ready <-chan struct{}) webhook.Server {
	return afterCertificate{Server: server, ready: ready}
}

// Setup adds the certificate rotator to the manager; it closes ready once the certificate is in
// CertDir and the CA in both webhook configurations.
func Setup(mgr ctrl.Manager, o Options, ready chan struct{}) error {
	if o.Secret.Namespace == "" || o.Secret.Name == "" || o.Service == "" {
		return errors.New("webhook certificate: the Secret's namespace and name and the webhook Service are needed (--webhook-cert-namespace or $POD_NAMESPACE)")
	}
	dnsName := fmt.Sprintf("%s.%s.svc", o.Service, o.Secret.Namespace)
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      o.Secret,
		CertDir:        o.CertDir,
		CAName:         "kube-clusterip-webhook-ca",
		CAOrganization: "kube-clusterip",
		DNSName:        dnsName,
		ExtraDNSNames:  []string{dnsName + ".cluster.local"},
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: o.MutatingWebhookConfiguration, Type: rotator.Mutating},
			{Name: o.ValidatingWebhookConfiguration, Type: rotator.Validating},
		},
		FieldOwner: "kube-clusterip",
		// Every replica serves the webhook, so every replica keeps its certificate current.
		RequireLeaderElection: false,
	})
	if err != nil {
		return fmt.Errorf("webhook certificate rotator: %w", err)
	}
	return nil
}

// afterCertificate starts the webhook server only once its certificate is ready: the server
// reads its key pair when it starts, and the Secret's volume shows the rotator's first write
// only after kubelet's next sync of the volume.
type afterCertificate struct {
	webhook.Server
	ready <-chan struct{}
}

func (s afterCertificate) Start(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	return s.Server.Start(ctx)
}

func (afterCertificate) NeedLeaderElection() bool { return false }
