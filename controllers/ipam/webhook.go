package ipam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Paths of the webhooks on the manager's webhook server; they match the markers below.
// MutateRetryPath is a second mutating webhook with the same handler: the API server never
// retries a webhook call, so when the replica answering the first one dies mid-call (failure
// policy Ignore lets the create go on), the second call, on a new connection to a live replica,
// still gives the Service its address from its pool. When the first call succeeded, the second
// finds the addresses already assigned and changes nothing.
const (
	MutatePath      = "/mutate-v1-service-clusterip"
	MutateRetryPath = "/mutate-v1-service-clusterip-retry"
	ValidatePath    = "/validate-v1-service-clusterip"
)

// +kubebuilder:webhook:path=/mutate-v1-service-clusterip,mutating=true,failurePolicy=ignore,sideEffects=NoneOnDryRun,groups="",resources=services,verbs=create;update,versions=v1,name=mclusterip.ipam.clusterip.dev,admissionReviewVersions=v1,timeoutSeconds=10,reinvocationPolicy=Never
// +kubebuilder:webhook:path=/mutate-v1-service-clusterip-retry,mutating=true,failurePolicy=ignore,sideEffects=NoneOnDryRun,groups="",resources=services,verbs=create;update,versions=v1,name=mclusterip.retry.ipam.clusterip.dev,admissionReviewVersions=v1,timeoutSeconds=10,reinvocationPolicy=Never
// +kubebuilder:webhook:path=/validate-v1-service-clusterip,mutating=false,failurePolicy=ignore,sideEffects=NoneOnDryRun,groups="",resources=services,verbs=create;update,versions=v1,name=vclusterip.ipam.clusterip.dev,admissionReviewVersions=v1,timeoutSeconds=10

// errNotReady fails the webhook call (HTTP 503, see failWhileRebuilding) until the pools mirror
// the cluster; with failurePolicy Ignore the API server then allocates the address itself and the
// repair loop adopts it, with Fail it refuses the create.
var errNotReady = errors.New("ClusterIP pools are still being rebuilt from the cluster's Services; " +
	"the API server assigns this Service's ClusterIP and the repair loop adopts it")

// serviceAdmission has what both webhooks need.
type serviceAdmission struct {
	registry *Registry
	// namespaces reads Namespaces (the manager's cache) for their labels; apiReader reads one
	// the cache has not seen yet.
	namespaces, apiReader client.Reader
	// live reads IPAddress objects without a client-side rate limit: one read per admission.
	live client.Reader
	// ipAddresses: the API server tracks ClusterIPs as IPAddress objects (see ipAddressesTracked).
	ipAddresses bool
	// reclaim (may be nil) drops reservations nothing holds any more, checked live; it
	// returns why it could not check them.
	reclaim func(context.Context) error
	decoder admission.Decoder
	// claims makes the addresses this replica hands out its own through the API server, so
	// that replicas never hand out one address twice; nil with a single replica.
	claims *claimer
}

// MutatingWebhook fills spec.clusterIP and spec.clusterIPs of Services that need ClusterIPs and
// lack some, from the most specific pool for their namespace.
type MutatingWebhook struct{ serviceAdmission }

// ValidatingWebhook checks the final object: every ClusterIP is reserved for the Service by the
// mutating webhook, already held by it, or free in a pool its namespace may use.
type ValidatingWebhook struct{ serviceAdmission }

// Handle implements admission.Handler.
func (m *MutatingWebhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	ctx, cancel := admissionContext(ctx)
	defer cancel()
	return m.timed("mutate", func() admission.Response { return m.mutate(ctx, req) })
}

// Handle implements admission.Handler.
func (v *ValidatingWebhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	ctx, cancel := admissionContext(ctx)
	defer cancel()
	return v.timed("validate", func() admission.Response { return v.validate(ctx, req) })
}

// admissionTimeout bounds one admission's API calls (claims, live reads); the API server gives
// up on the webhook after timeoutSeconds (10).
const admissionTimeout = 9 * time.Second

// admissionContext is ctx without its cancellation: a replica that shuts down cancels the
// contexts of its requests, yet it still finishes the admissions it has begun (the API server
// waits for their answers), so their API calls get a deadline of their own instead.
func admissionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), admissionTimeout)
}

func (a *serviceAdmission) timed(webhook string, handle func() admission.Response) admission.Response {
	start := time.Now()
	resp := handle()
	webhookLatency.WithLabelValues(webhook, strconv.FormatBool(resp.Allowed)).Observe(time.Since(start).Seconds())
	return resp
}

// admissionInput is a decoded Service request.
type admissionInput struct {
	key             types.NamespacedName
	svc             *corev1.Service
	old             *corev1.Service // before an update, when it had ClusterIPs
	previous        []netip.Addr    // the IPs before an update
	namespaceLabels labels.Set
	dryRun          bool
}

// read decodes the request (failWhileRebuilding has waited for the registry); a nil input with an Allowed response
// means the Service needs no ClusterIP from us.
func (a *serviceAdmission) read(ctx context.Context, req admission.Request) (*admissionInput, *admission.Response) {
	svc := &corev1.Service{}
	if err := a.decoder.Decode(req, svc); err != nil {
		resp := admission.Errored(http.StatusBadRequest, err)
		return nil, &resp
	}
	if !needsClusterIP(svc) {
		resp := admission.Allowed("the Service gets no ClusterIP")
		return nil, &resp
	}
	in := &admissionInput{
		key:    types.NamespacedName{Namespace: req.Namespace, Name: svc.Name},
		svc:    svc,
		dryRun: req.DryRun != nil && *req.DryRun,
	}
	if in.key.Name == "" {
		in.key.Name = req.Name
	}
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old := &corev1.Service{}
		if err := a.decoder.DecodeRaw(req.OldObject, old); err != nil {
			resp := admission.Errored(http.StatusBadRequest, err)
			return nil, &resp
		}
		if needsClusterIP(old) {
			in.previous, _ = clusterIPsOf(old)
			if len(in.previous) > 0 {
				in.old = old
			}
		}
	}
	nsLabels, err := namespaceLabels(ctx, a.namespaces, a.apiReader, req.Namespace)
	if err != nil {
		resp := admission.Errored(http.StatusInternalServerError, err)
		return nil, &resp
	}
	in.namespaceLabels = nsLabels
	return in, nil
}

func (m *MutatingWebhook) mutate(ctx context.Context, req admission.Request) admission.Response {
	in, resp := m.read(ctx, req)
	if resp != nil {
		return *resp
	}
	requested, err := clusterIPsOf(in.svc)
	if err != nil {
		return admission.Allowed("") // the API server's validation explains a malformed IP
	}
	if len(requested) == 0 && len(in.previous) > 0 {
		// An update that does not repeat the ClusterIPs keeps them (the API server copies them over).
		requested = in.previous
	}
	policy, keepFamilies := in.svc.Spec.IPFamilyPolicy, false
	if in.old != nil {
		if policy == nil { // as kube-apiserver: an update without a policy keeps the old one
			policy = in.old.Spec.IPFamilyPolicy
		}
		keepFamilies = ptr.Equal(policy, in.old.Spec.IPFamilyPolicy) &&
			(len(in.svc.Spec.IPFamilies) == 0 || slices.Equal(in.svc.Spec.IPFamilies, in.old.Spec.IPFamilies))
	}
	if (policy == nil || *policy == corev1.IPFamilyPolicySingleStack) && (len(requested) > 1 || len(in.svc.Spec.IPFamilies) > 1) {
		// The API server's validation refuses a single-stack Service with two addresses or
		// families, with every reason at once (also an address of a family it lacks).
		return admission.Allowed("")
	}
	ips, err := m.assign(ctx, AssignRequest{
		Service:         in.key,
		NamespaceLabels: in.namespaceLabels,
		Policy:          policy,
		IPFamilies:      in.svc.Spec.IPFamilies,
		Requested:       requested,
		Previous:        in.previous,
		KeepFamilies:    keepFamilies,
		DryRun:          in.dryRun,
	})
	if errors.Is(err, errUnboundClaim) {
		return failCall(ctx, err)
	}
	if err != nil {
		return deny(in.svc, err)
	}
	if len(ips) == 0 || slices.Equal(ips, mustParse(in.svc.Spec.ClusterIPs)) {
		return admission.Allowed("")
	}
	all := make([]string, len(ips))
	for i, ip := range ips {
		all[i] = ip.String()
	}
	return admission.Patched("",
		jsonpatch.NewOperation("add", "/spec/clusterIP", all[0]),
		jsonpatch.NewOperation("add", "/spec/clusterIPs", all))
}

func (v *ValidatingWebhook) validate(ctx context.Context, req admission.Request) admission.Response {
	in, resp := v.read(ctx, req)
	if resp != nil {
		return *resp
	}
	ips, err := clusterIPsOf(in.svc)
	if err != nil {
		return admission.Allowed("")
	}
	for attempt := 1; ; attempt++ {
		err := v.grantFreed(ctx, in.key, func() error {
			return v.registry.Validate(in.key, ips, in.previous, in.namespaceLabels, in.dryRun)
		})
		if err != nil && attempt < 2 {
			if ours, cerr := v.claimedForUs(ctx, in.key, err); cerr != nil {
				return failCall(ctx, cerr)
			} else if ours {
				continue
			}
		}
		if err != nil {
			return deny(in.svc, err)
		}
		if in.dryRun {
			return admission.Allowed("")
		}
		// An address the registry knew nothing of (assigned by a replica whose claim this one
		// has not seen yet, or requested past the mutating webhook) is claimed here; when the
		// claim is another Service's, the registry now knows it and the next Validate denies.
		retry, err := v.claimNew(ctx, in.key, ips)
		switch {
		case err != nil:
			return admission.Errored(http.StatusInternalServerError, err)
		case !retry:
			return admission.Allowed("")
		case attempt == 2:
			return admission.Errored(http.StatusInternalServerError, errClaimsRace)
		}
	}
}

// errClaimsRace is answered when claims kept changing under one admission.
var errClaimsRace = errors.New("the ClusterIP claims of the replicas kept changing during this admission; retry")

// assign is assignFree with the new addresses claimed: when another replica claimed one
// first, the registry learns of that claim and assigns again (another address, or for a
// requested one the error users know: it is being assigned to another Service).
func (a *serviceAdmission) assign(ctx context.Context, req AssignRequest) ([]netip.Addr, error) {
	for attempt := 1; ; attempt++ {
		ips, err := a.assignFree(ctx, req)
		if err != nil && attempt < maxClaimAttempts {
			if ours, cerr := a.claimedForUs(ctx, req.Service, err); cerr != nil {
				return nil, cerr
			} else if ours {
				continue
			}
		}
		if err != nil || req.DryRun {
			return ips, err
		}
		retry, err := a.claimNew(ctx, req.Service, ips)
		switch {
		case err != nil:
			return nil, err
		case !retry:
			return ips, nil
		case attempt == maxClaimAttempts:
			return nil, fmt.Errorf("%w (after %d addresses claimed by other replicas)", errClaimsRace, attempt)
		}
	}
}

// claimedForUs says whether err refuses an address as being assigned to another Service while
// the API server's claim on it is for key after all (this replica has not seen that claim yet).
// It fails when the claim still names no Service (see claimer.claimedFor): that call is answered
// with an error, not a denial.
func (a *serviceAdmission) claimedForUs(ctx context.Context, key types.NamespacedName, err error) (bool, error) {
	var ae *AdmissionError
	if a.claims == nil || !errors.As(err, &ae) || !ae.Contested.IsValid() {
		return false, nil
	}
	ours, lerr := a.claims.claimedFor(ctx, key, ae.Contested)
	if errors.Is(lerr, errUnboundClaim) {
		return false, lerr
	}
	return lerr == nil && ours, nil
}

// claimNew claims the addresses just reserved for key. It returns retry when another Service's
// claim holds one of them (seen by this replica's watch since the registry chose it, or refused
// by the API server), after dropping the reservations (the claims it did make are then deleted
// in the background).
func (a *serviceAdmission) claimNew(ctx context.Context, key types.NamespacedName, ips []netip.Addr) (retry bool, err error) {
	if a.claims == nil {
		return false, nil
	}
	fresh, taken := a.registry.Unclaimed(key, ips)
	if taken.IsValid() {
		a.registry.CancelReservations(key, append(fresh, taken))
		return true, nil
	}
	lost, err := a.claims.claim(ctx, key, fresh)
	if err == nil && lost == nil {
		return false, nil
	}
	a.registry.CancelReservations(key, fresh)
	a.registry.AbandonClaims(fresh)
	return err == nil, err
}

// deny turns an assignment error into a refusal users can act on (see refusal), and counts it.
func deny(svc *corev1.Service, err error) admission.Response {
	var ae *AdmissionError
	if !errors.As(err, &ae) {
		allocationErrors.WithLabelValues("", "Internal").Inc()
		return admission.Errored(http.StatusInternalServerError, err)
	}
	allocationErrors.WithLabelValues(ae.Pool, ae.Reason).Inc()
	return refusal(svc, ae)
}

// needsClusterIP is false for ExternalName and headless Services, which get no ClusterIP.
func needsClusterIP(svc *corev1.Service) bool {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return svc.Spec.ClusterIP != corev1.ClusterIPNone &&
		(len(svc.Spec.ClusterIPs) == 0 || svc.Spec.ClusterIPs[0] != corev1.ClusterIPNone)
}

// clusterIPsOf returns the ClusterIPs a Service names (spec.clusterIPs, else spec.clusterIP).
func clusterIPsOf(svc *corev1.Service) ([]netip.Addr, error) {
	if !needsClusterIP(svc) {
		return nil, nil
	}
	raw := svc.Spec.ClusterIPs
	if len(raw) == 0 && svc.Spec.ClusterIP != "" {
		raw = []string{svc.Spec.ClusterIP}
	}
	ips := make([]netip.Addr, 0, len(raw))
	for _, s := range raw {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("clusterIP %q: %w", s, err)
		}
		ips = append(ips, ip.Unmap())
	}
	return ips, nil
}

func mustParse(raw []string) []netip.Addr {
	var ips []netip.Addr
	for _, s := range raw {
		if ip, err := netip.ParseAddr(s); err == nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

// callFailure is where a handler asks failableCalls to fail its HTTP call (failCall).
type callFailure struct{ err error }

type callFailureKey struct{}

// failCall fails the webhook call instead of answering it: the API server then applies the
// webhook's failurePolicy. An answer with allowed=false, whatever its code, would be a denial.
// Without failableCalls around the handler the call is answered with that error (a denial).
func failCall(ctx context.Context, err error) admission.Response {
	if f, ok := ctx.Value(callFailureKey{}).(*callFailure); ok {
		f.err = err
	}
	return admission.Errored(http.StatusServiceUnavailable, err)
}

// failableCalls lets the handlers under it fail their HTTP call (failCall) with status 503: it
// holds their answer back until they return.
func failableCalls(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		failure := &callFailure{}
		held := &heldResponse{header: http.Header{}, code: http.StatusOK}
		next.ServeHTTP(held, req.WithContext(context.WithValue(req.Context(), callFailureKey{}, failure)))
		if failure.err != nil {
			http.Error(w, failure.err.Error(), http.StatusServiceUnavailable)
			return
		}
		maps.Copy(w.Header(), held.header)
		w.WriteHeader(held.code)
		_, _ = w.Write(held.body.Bytes())
	})
}

// heldResponse is an http.ResponseWriter that keeps what is written.
type heldResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header         { return h.header }
func (h *heldResponse) Write(b []byte) (int, error) { return h.body.Write(b) }
func (h *heldResponse) WriteHeader(code int)        { h.code = code }

// failWhileRebuilding holds a webhook call until the registry mirrors the cluster, up to wait;
// then it fails the call with HTTP 503 instead of answering. A failed call is what the
// webhook's failurePolicy governs (Ignore: the API server allocates itself; Fail: the create is
// refused), whereas an answer with allowed=false would be a denial, enforced whatever the
// policy.
func failWhileRebuilding(registry *Registry, wait time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-registry.Ready():
			next.ServeHTTP(w, req)
		case <-timer.C:
			http.Error(w, errNotReady.Error(), http.StatusServiceUnavailable)
		case <-req.Context().Done():
			http.Error(w, req.Context().Err().Error(), http.StatusServiceUnavailable)
		}
	})
}
