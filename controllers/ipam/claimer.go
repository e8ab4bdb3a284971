package ipam

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;patch;delete

// Labels and annotations of claim Leases.
const (
	// ClaimLabel marks a Lease as a ClusterIP claim; the replicas watch only those.
	ClaimLabel = "ipam.clusterip.dev/claim"
	// claimIPAnnotation and claimServiceAnnotation name the address and the Service
	// ("namespace/name", the name empty for a generated one) a claim is for.
	claimIPAnnotation      = "ipam.clusterip.dev/ip"
	claimServiceAnnotation = "ipam.clusterip.dev/service"
	// claimPoolLabel is the pool the address belongs to, for kubectl.
	claimPoolLabel = "ipam.clusterip.dev/pool"
)

// maxClaimAttempts bounds how many addresses one admission tries to claim before it gives up
// (each refused claim means another replica took the address a moment before).
const maxClaimAttempts = 16

// errUnboundClaim: another replica's stash claim still names no Service after bindWait. Either
// that replica handed the address out and died before it could name the Service, or the
// address was requested while it sat in that replica's stash; the admission fails (and
// failurePolicy decides) rather than deny a create the API server may grant.
var errUnboundClaim = errors.New("another webhook replica set this address aside and has not said for which Service after " +
	bindWait.String() + " (it may have stopped)")

// bindWait is how long a replica waits for another replica's stash claim to name the Service it
// was handed to (the other replica names it right after answering its admission).
const bindWait = 3 * time.Second

// ClaimName is the name of the Lease that claims ip: "clusterip-" and the address, with dots
// kept for IPv4 and the 32 hex digits for IPv6 (colons are not allowed in names).
func ClaimName(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		return "clusterip-" + ip.String()
	}
	b := ip.As16()
	return "clusterip-" + hex.EncodeToString(b[:])
}

// claimOf reads the address, the Service and the holder of a claim Lease; ok is false for a
// Lease that is not a well-formed claim.
func claimOf(lease *coordinationv1.Lease) (ip netip.Addr, service types.NamespacedName, holder string, ok bool) {
	ip, err := netip.ParseAddr(lease.Annotations[claimIPAnnotation])
	if err != nil || lease.Name != ClaimName(ip) {
		return netip.Addr{}, types.NamespacedName{}, "", false
	}
	if ns, name, found := strings.Cut(lease.Annotations[claimServiceAnnotation], "/"); found {
		service = types.NamespacedName{Namespace: ns, Name: name}
	}
	return ip, service, ptr.Deref(lease.Spec.HolderIdentity, ""), true
}

// newIdentity names this process among the replicas: the host (the pod) and a random suffix,
// so that a restarted process does not take its predecessor's claims for its own.
func newIdentity() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// claimer creates and deletes the claim Leases of this replica, in one namespace.
type claimer struct {
	client    client.Client
	apiReader client.Reader // live reads: the manager's cache does not hold the claims
	namespace string
	identity  string
	lifetime  time.Duration
	registry  *Registry
	poolOf    func(netip.Addr) string
	// bindWait overrides the const bindWait (tests).
	bindWait time.Duration
}

// claim claims each of ips for Service key. It returns the first address another Service's
// claim already holds (lost), after recording that claim; an address whose claim is already
// for key counts as claimed. Any other error is the API server's.
func (c *claimer) claim(ctx context.Context, key types.NamespacedName, ips []netip.Addr) (lost *netip.Addr, err error) {
	for _, ip := range ips {
		lease := c.newLease(ip, key)
		err := c.client.Create(ctx, lease)
		if err == nil {
			c.registry.RecordClaim(ip, key, lease.UID, true, c.lifetime)
			continue
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("claim ClusterIP %s (Lease %s/%s): %w", ip, c.namespace, lease.Name, err)
		}
		current := &coordinationv1.Lease{}
		if err := c.apiReader.Get(ctx, client.ObjectKeyFromObject(lease), current); err != nil {
			if apierrors.IsNotFound(err) { // deleted in between: the next attempt may have it
				return &ip, nil
			}
			return nil, fmt.Errorf("read the claim of ClusterIP %s (Lease %s/%s): %w", ip, c.namespace, lease.Name, err)
		}
		_, service, holder, _ := claimOf(current)
		c.registry.RecordClaim(ip, service, current.UID, holder == c.identity, c.lifetime)
		if (claim{service: service}).isFor(key) {
			continue
		}
		return &ip, nil
	}
	return nil, nil
}

// claimedFor reads the claim on ip live and records it: whether it exists for Service key. A
// replica whose watch lags may still think ip is being assigned to another Service while the
// replica that answered this Service's mutating call has claimed it for this one. A claim
// another replica made for its stash names its Service only a moment after that replica handed
// the address out (see stashFiller.bind): it is read again until it does, for up to bindWait.
func (c *claimer) claimedFor(ctx context.Context, key types.NamespacedName, ip netip.Addr) (bool, error) {
	current := &coordinationv1.Lease{}
	var service types.NamespacedName
	var holder string
	start := time.Now()
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 100*time.Millisecond) {
		err := c.apiReader.Get(ctx, types.NamespacedName{Namespace: c.namespace, Name: ClaimName(ip)}, current)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read the claim of ClusterIP %s: %w", ip, err)
		}
		_, service, holder, _ = claimOf(current)
		if service.Namespace != "" || holder == c.identity {
			break
		}
		if wait := cmp.Or(c.bindWait, bindWait); time.Since(start) > wait {
			c.registry.RecordClaim(ip, service, current.UID, false, c.lifetime)
			return false, fmt.Errorf("%w: ClusterIP %s (Lease %s/%s, replica %s)", errUnboundClaim, ip, c.namespace, current.Name, holder)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pause):
		}
	}
	c.registry.RecordClaim(ip, service, current.UID, holder == c.identity, c.lifetime)
	if !(claim{service: service}).isFor(key) {
		return false, nil
	}
	c.registry.YieldToClaim(ip, key)
	return true, nil
}

// stash claims ip for this replica's stash, naming no Service yet. It returns false when
// another claim exists (recorded now); any other error is the API server's.
func (c *claimer) stash(ctx context.Context, ip netip.Addr) (bool, error) {
	lost, err := c.claim(ctx, types.NamespacedName{}, []netip.Addr{ip})
	return err == nil && lost == nil, err
}

// bind names the Service in the Lease of a stashed address this replica handed out. The patch
// applies only to the claim the registry knows (same UID) while it names no Service yet; done
// is true when the Lease names the Service, or is gone or replaced (nothing left to bind).
func (c *claimer) bind(ctx context.Context, b ClaimBinding) (done bool, err error) {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": b.UID},
		{"op": "test", "path": "/metadata/annotations/" + jsonPointerEscape(claimServiceAnnotation), "value": ""},
		{"op": "replace", "path": "/metadata/annotations/" + jsonPointerEscape(claimServiceAnnotation), "value": b.Service.Namespace + "/" + b.Service.Name},
	})
	if err != nil {
		return false, err
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: ClaimName(b.IP)}}
	err = c.client.Patch(ctx, lease, client.RawPatch(types.JSONPatchType, patch))
	if err == nil || apierrors.IsNotFound(err) {
		return true, nil
	}
	current := &coordinationv1.Lease{}
	if gerr := c.apiReader.Get(ctx, client.ObjectKeyFromObject(lease), current); apierrors.IsNotFound(gerr) || (gerr == nil && current.UID != b.UID) {
		return true, nil
	}
	return false, fmt.Errorf("name Service %s in the claim of ClusterIP %s (Lease %s/%s): %w", b.Service, b.IP, c.namespace, lease.Name, err)
}

// jsonPointerEscape escapes a key for a JSON pointer (RFC 6901).
func jsonPointerEscape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}

func (c *claimer) newLease(ip netip.Addr, key types.NamespacedName) *coordinationv1.Lease {
	now := metav1.NowMicro()
	service := ""
	if key.Namespace != "" {
		service = key.Namespace + "/" + key.Name
	}
	labels := map[string]string{ClaimLabel: "true"}
	if pool := c.poolOf(ip); pool != "" {
		labels[claimPoolLabel] = pool
	}
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.namespace, Name: ClaimName(ip), Labels: labels,
			Annotations: map[string]string{claimIPAnnotation: ip.String(), claimServiceAnnotation: service},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(c.identity),
			LeaseDurationSeconds: ptr.To(int32(math.Ceil(c.lifetime.Seconds()))),
			AcquireTime:          &now,
			RenewTime:            &now,
		},
	}
}

// delete deletes a claim, only the one with ref's UID; gone already counts as done.
func (c *claimer) delete(ctx context.Context, ref ClaimRef) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: c.namespace, Name: ClaimName(ref.IP)}}
	err := c.client.Delete(ctx, lease, client.Preconditions{UID: ptr.To(ref.UID)})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete the claim of ClusterIP %s (Lease %s/%s): %w", ref.IP, c.namespace, lease.Name, err)
	}
	c.registry.ForgetClaim(ref.IP, ref.UID)
	return nil
}

// claimWatch mirrors the claim Leases of every replica into the registry, and deletes the claims
// that are due (DueClaims). It runs on every replica.
type claimWatch struct {
	claimer *claimer
	cache   cache.Cache // only the claim Leases of the namespace
	every   time.Duration
	kick    chan struct{}
}

func newClaimCache(mgr ctrl.Manager, namespace string) (cache.Cache, error) {
	return cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		DefaultNamespaces:    map[string]cache.Config{namespace: {}},
		DefaultLabelSelector: labels.SelectorFromSet(labels.Set{ClaimLabel: "true"}),
	})
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica claims.
func (w *claimWatch) NeedLeaderElection() bool { return false }

// synced waits until the claims of the other replicas are in the registry.
func (w *claimWatch) synced(ctx context.Context) bool { return w.cache.WaitForCacheSync(ctx) }

// Start implements manager.Runnable.
func (w *claimWatch) Start(ctx context.Context) error {
	informer, err := w.cache.GetInformer(ctx, &coordinationv1.Lease{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("watch the ClusterIP claims: %w", err)
	}
	_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    w.seen,
		UpdateFunc: func(_, obj any) { w.seen(obj) },
		DeleteFunc: w.gone,
	})
	if err != nil {
		return fmt.Errorf("watch the ClusterIP claims: %w", err)
	}
	go func() {
		if err := w.cache.Start(ctx); err != nil {
			logf.FromContext(ctx).Error(err, "The cache of ClusterIP claims stopped")
		}
	}()
	if !w.synced(ctx) {
		return nil
	}
	log := logf.FromContext(ctx).WithName("clusterip-claims")
	runEvery(ctx, w.every, w.kick, func() {
		mine, stale := w.claimer.registry.DueClaims()
		for _, ref := range append(mine, stale...) {
			if err := w.claimer.delete(ctx, ref); err != nil {
				log.Error(err, "Deleting a ClusterIP claim failed; retrying")
			}
		}
	})
	return nil
}

// wake asks for the due claims to be deleted now (an address was released).
func (w *claimWatch) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *claimWatch) seen(obj any) {
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	ip, service, holder, ok := claimOf(lease)
	if !ok || holder == w.claimer.identity {
		return // ours are recorded when created
	}
	w.claimer.registry.RecordClaim(ip, service, lease.UID, false, w.claimer.lifetime)
}

func (w *claimWatch) gone(obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	lease, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	if ip, _, _, ok := claimOf(lease); ok {
		w.claimer.registry.ForgetClaim(ip, lease.UID)
	}
}
