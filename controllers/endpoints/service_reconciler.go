package endpoints

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// staleCacheRetry is how soon a sync retries when the cache has not yet seen our last writes.
const staleCacheRetry = 50 * time.Millisecond

// serviceReconciler publishes the Endpoints and EndpointSlices of one Service with a selector.
type serviceReconciler struct {
	// Reader reads from the manager's cache.
	Reader client.Reader
	// EndpointsWriter writes Endpoints (and deletes the Events of fixed findings), SliceWriter
	// EndpointSlices: each through a client with a rate limit of its own (see writerClient).
	EndpointsWriter      client.Writer
	SliceWriter          client.Writer
	Recorder             events.EventRecorder
	MaxEndpointsPerSlice int

	expectations *writeExpectations
	triggerTimes *triggerTimes
	findings     *findingReporter
	hintEvents   *hintEventReporter
	// nodeRetries resyncs a Service whose pods name a Node the cache lacks, as upstream retries it.
	nodeRetries retryBudget
	// upstreamSlices are the slices kube-controller-manager left, retired once ours are written.
	upstreamSlices upstreamLeftovers
}

// Reconcile reads the Service, its pods and their nodes from the cache, computes both APIs' desired
// state and writes what differs.
func (r *serviceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	svc := &corev1.Service{}
	if err := r.Reader.Get(ctx, req.NamespacedName, svc, client.UnsafeDisableDeepCopy); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get Service %s: %w", req, err)
		}
		// An Endpoints we created just before the Service went may not be in the cache yet;
		// deleting by the cache would then leave it behind, and nothing would sync it again.
		if waiting, err := r.waitingForOurWrites(ctx, req.NamespacedName); err != nil || waiting {
			return ctrl.Result{RequeueAfter: staleCacheRetry}, err
		}
		r.triggerTimes.forget(req.NamespacedName)
		r.expectations.forget(req.NamespacedName)
		r.findings.forget(req.NamespacedName)
		r.hintEvents.forget(req.NamespacedName)
		r.nodeRetries.forget(req.NamespacedName)
		return ctrl.Result{}, r.deleteOurEndpoints(ctx, req.NamespacedName)
	}
	slices, err := r.ourSlices(ctx, svc.Namespace, svc.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.Selector == nil {
		// Their Endpoints belong to the user; slices we made while it had a selector go.
		r.findings.report(ctx, svc, nil)
		return ctrl.Result{}, r.applySlicePlan(ctx, req.NamespacedName, SlicePlan{Delete: slices})
	}
	current, err := r.currentEndpoints(ctx, req.NamespacedName)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !r.expectations.satisfied(req.NamespacedName, cachedVersions(current, slices)) {
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}
	pods, err := r.selectedPods(ctx, svc)
	if err != nil {
		return ctrl.Result{}, err
	}
	nodes, err := r.nodesOf(ctx, pods)
	if err != nil {
		return ctrl.Result{}, err
	}
	triggerTime := r.triggerTimes.compute(svc, pods)
	r.findings.report(ctx, svc, serviceFindings(svc, pods, func() []*corev1.Pod { return r.podsInNamespace(ctx, svc.Namespace) }))

	desired := DesiredEndpoints(svc, EndpointSubsets(svc, pods), current, triggerTime)
	groups, unknownNodePods := DesiredEndpointGroups(svc, pods, nodes)
	if err := r.setHints(ctx, svc, groups); err != nil {
		return ctrl.Result{}, err
	}
	plan := PlanEndpointSlices(svc, groups, slices, r.MaxEndpointsPerSlice, triggerTime)
	if svc.DeletionTimestamp != nil {
		plan.Create = nil
	}
	// The two APIs are independent: write them in parallel so that a change reaches both at once.
	r.expectations.begin(req.NamespacedName)
	defer r.expectations.end(req.NamespacedName)
	var endpointsErr, slicesErr error
	var wg sync.WaitGroup
	if desired != nil {
		wg.Go(func() { endpointsErr = r.writeEndpoints(ctx, desired, current) })
	}
	slicesErr = r.applySlicePlan(ctx, req.NamespacedName, plan)
	if slicesErr == nil {
		slicesErr = r.upstreamSlices.retire(ctx, r.Reader, r.SliceWriter, req.NamespacedName)
	}
	wg.Wait()
	if slicesErr != nil && !staleWrite(slicesErr) {
		r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, "FailedToUpdateEndpointSlices", "UpdateEndpointSlices",
			"Error updating Endpoint Slices for Service %s/%s: %v", svc.Namespace, svc.Name, slicesErr)
	}
	var result ctrl.Result
	if len(unknownNodePods) == 0 {
		r.nodeRetries.forget(req.NamespacedName)
	} else {
		// As upstream: the pods are left out, the Service is warned, and synced again with
		// backoff until their Node is known (or the retries run out).
		r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, "FailedToUpdateEndpointSlices", "UpdateEndpointSlices",
			"Error updating Endpoint Slices for Service %s/%s: %s", svc.Namespace, svc.Name, unknownNodesMessage(svc, pods, unknownNodePods))
		result.RequeueAfter = r.nodeRetries.next(req.NamespacedName)
	}
	if staleWrite(endpointsErr) && staleWrite(slicesErr) && (endpointsErr != nil || slicesErr != nil) {
		ctrl.LoggerFrom(ctx).V(1).Info("Cache is behind the API server; syncing again", "error", errors.Join(endpointsErr, slicesErr))
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}
	return result, errors.Join(endpointsErr, slicesErr)
}

// retryBudget is upstream's EndpointSlice retry schedule for a Service that keeps failing: 1 s,
// then twice as long each time (at most 1000 s), 15 times, then no more until it succeeds.
type retryBudget struct {
	mu    sync.Mutex
	tries map[types.NamespacedName]int
}

const (
	retryBase  = time.Second
	retryMax   = 1000 * time.Second
	maxRetries = 15
)

// next counts a failed sync of key and returns when to retry it, or 0 when its retries are
// spent; the count then starts again, for the next sync some change brings.
func (b *retryBudget) next(key types.NamespacedName) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tries == nil {
		b.tries = map[types.NamespacedName]int{}
	}
	n := b.tries[key]
	if n >= maxRetries {
		delete(b.tries, key)
		return 0
	}
	b.tries[key] = n + 1
	return min(retryBase<<n, retryMax)
}

// forget resets key's retries after a sync that succeeded.
func (b *retryBudget) forget(key types.NamespacedName) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.tries, key)
}

// staleWrite says whether a write failed (if at all) only because our cache was behind: a
// conflict, or a create of what already exists. Such writes are retried quietly.
func staleWrite(err error) bool {
	return err == nil || apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

// unknownNodesMessage says which pods were left out for want of their Node, in upstream's words
// (one pod: its sentence; several: in brackets, by name).
func unknownNodesMessage(svc *corev1.Service, pods []*corev1.Pod, unknown []string) string {
	var msgs []string
	for _, p := range pods {
		if slices.Contains(unknown, p.Name) {
			msgs = append(msgs, fmt.Sprintf("skipping Pod %s for Service %s/%s: Node %s Not Found", p.Name, svc.Namespace, svc.Name, p.Spec.NodeName))
		}
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	if len(msgs) == 1 {
		return msgs[0]
	}
	return "[" + strings.Join(msgs, ", ") + "]"
}

// waitingForOurWrites says whether the cache has yet to show writes we made of the Service's
// Endpoints or slices.
func (r *serviceReconciler) waitingForOurWrites(ctx context.Context, key types.NamespacedName) (bool, error) {
	current, err := r.currentEndpoints(ctx, key)
	if err != nil {
		return false, err
	}
	slices, err := r.ourSlices(ctx, key.Namespace, key.Name)
	if err != nil {
		return false, err
	}
	return !r.expectations.satisfied(key, cachedVersions(current, slices)), nil
}

func cachedVersions(ep *corev1.Endpoints, slices []*discoveryv1.EndpointSlice) map[string]string {
	rv := make(map[string]string, len(slices)+1)
	if ep != nil {
		rv[endpointsExpectationKey] = ep.ResourceVersion
	}
	for _, s := range slices {
		rv[s.Name] = s.ResourceVersion
	}
	return rv
}

// endpointsExpectationKey names the Endpoints among a Service's expectations; no slice has it.
const endpointsExpectationKey = "Endpoints/"

func (r *serviceReconciler) currentEndpoints(ctx context.Context, key types.NamespacedName) (*corev1.Endpoints, error) {
	ep := &corev1.Endpoints{}
	if err := r.Reader.Get(ctx, key, ep, client.UnsafeDisableDeepCopy); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get Endpoints %s: %w", key, err)
	}
	return ep, nil
}

// selectedPods lists the Service's pods through the label index (one selector pair), then matches
// the whole selector.
func (r *serviceReconciler) selectedPods(ctx context.Context, svc *corev1.Service) ([]*corev1.Pod, error) {
	pairs := labelPairs(svc.Spec.Selector)
	if len(pairs) == 0 {
		return nil, nil
	}
	var list corev1.PodList
	if err := r.Reader.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingFields{podLabelIndex: pairs[0]},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list pods of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	pods := make([]*corev1.Pod, 0, len(list.Items))
	for i := range list.Items {
		if endpointrules.Selects(svc, &list.Items[i]) {
			pods = append(pods, &list.Items[i])
		}
	}
	return pods, nil
}

// podsInNamespace lists the namespace's pods from the cache, for the near-miss check of a
// selector that matches none; nil if the cache cannot answer.
func (r *serviceReconciler) podsInNamespace(ctx context.Context, namespace string) []*corev1.Pod {
	var list corev1.PodList
	if err := r.Reader.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	pods := make([]*corev1.Pod, 0, len(list.Items))
	for i := range list.Items {
		pods = append(pods, &list.Items[i])
	}
	return pods
}

func (r *serviceReconciler) nodesOf(ctx context.Context, pods []*corev1.Pod) (map[string]*corev1.Node, error) {
	nodes := map[string]*corev1.Node{}
	for _, pod := range pods {
		name := pod.Spec.NodeName
		if _, done := nodes[name]; done || name == "" {
			continue
		}
		node := &corev1.Node{}
		if err := r.Reader.Get(ctx, types.NamespacedName{Name: name}, node, client.UnsafeDisableDeepCopy); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("get Node %s: %w", name, err)
		}
		nodes[name] = node
	}
	return nodes, nil
}

// setHints sets the topology hints of groups: topology-mode Auto's (which needs every Node's
// zone and allocatable CPU, and reports its outcome as Events) or spec.trafficDistribution's.
func (r *serviceReconciler) setHints(ctx context.Context, svc *corev1.Service, groups []EndpointGroup) error {
	if !TopologyAwareHintsAuto(svc) {
		SetTrafficDistributionHints(svc, groups)
		r.hintEvents.report(svc, nil)
		return nil
	}
	var list corev1.NodeList
	if err := r.Reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list Nodes for topology aware hints: %w", err)
	}
	nodes := make([]*corev1.Node, 0, len(list.Items))
	for i := range list.Items {
		nodes = append(nodes, &list.Items[i])
	}
	cpu, refusal := ZoneCPUOf(nodes)
	r.hintEvents.report(svc, SetTopologyAwareHints(AddressTypes(svc), groups, cpu, refusal))
	return nil
}

func (r *serviceReconciler) ourSlices(ctx context.Context, namespace, name string) ([]*discoveryv1.EndpointSlice, error) {
	return listSlices(ctx, r.Reader, namespace, sliceOwnerKey(endpointrules.SliceControllerName, name))
}

func listSlices(ctx context.Context, c client.Reader, namespace, ownerKey string) ([]*discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{sliceOwnerIndex: ownerKey},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list EndpointSlices %s in %s: %w", ownerKey, namespace, err)
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].DeletionTimestamp == nil {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

func (r *serviceReconciler) writeEndpoints(ctx context.Context, desired, current *corev1.Endpoints) error {
	key := client.ObjectKeyFromObject(desired)
	if current == nil {
		if err := r.EndpointsWriter.Create(ctx, desired); err != nil {
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return nil
			}
			r.warnEndpoints(desired, err, "FailedToCreateEndpoint", "Failed to create endpoint for service")
			return fmt.Errorf("create Endpoints %s: %w", key, err)
		}
		r.expectations.expectWrite(key, endpointsExpectationKey, "", desired.ResourceVersion)
		return nil
	}
	if err := r.EndpointsWriter.Update(ctx, desired); err != nil {
		r.warnEndpoints(desired, err, "FailedToUpdateEndpoint", "Failed to update endpoint")
		return fmt.Errorf("update Endpoints %s: %w", key, err)
	}
	r.expectations.expectWrite(key, endpointsExpectationKey, current.ResourceVersion, desired.ResourceVersion)
	return nil
}

// warnEndpoints records a failed write on the Endpoints, as upstream's endpoints controller does,
// unless the cache was merely behind (the write is then retried quietly).
func (r *serviceReconciler) warnEndpoints(ep *corev1.Endpoints, err error, reason, what string) {
	if staleWrite(err) {
		return
	}
	r.Recorder.Eventf(ep, nil, corev1.EventTypeWarning, reason, "UpdateEndpoints", "%s %s/%s: %v", what, ep.Namespace, ep.Name, err)
}

// deleteOurEndpoints removes the Endpoints of a deleted Service when we wrote them; Endpoints a
// user wrote (perhaps before creating the Service) stay. Slices go with the Service (owner refs).
func (r *serviceReconciler) deleteOurEndpoints(ctx context.Context, key types.NamespacedName) error {
	current, err := r.currentEndpoints(ctx, key)
	if err != nil || current == nil || current.Labels[endpointrules.LabelEndpointsManagedBy] != endpointrules.EndpointsControllerName {
		return err
	}
	err = r.EndpointsWriter.Delete(ctx, current.DeepCopy(), client.Preconditions{UID: &current.UID})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete Endpoints %s of a deleted Service: %w", key, err)
	}
	return nil
}

func (r *serviceReconciler) applySlicePlan(ctx context.Context, owner types.NamespacedName, plan SlicePlan) error {
	return applySlicePlan(ctx, r.SliceWriter, r.expectations, owner, plan)
}

// applySlicePlan writes a plan, creates first (so that endpoints are never missing), then
// updates, then deletes, remembering each write until the cache has it.
func applySlicePlan(ctx context.Context, c client.Writer, exp *writeExpectations, owner types.NamespacedName, plan SlicePlan) error {
	for _, s := range plan.Create {
		if err := c.Create(ctx, s); err != nil {
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return nil
			}
			return fmt.Errorf("create EndpointSlice for %s: %w", owner, err)
		}
		exp.expectWrite(owner, s.Name, "", s.ResourceVersion)
	}
	for _, s := range plan.Update {
		replaced := s.ResourceVersion
		if err := c.Update(ctx, s); err != nil {
			return fmt.Errorf("update EndpointSlice %s of %s: %w", s.Name, owner, err)
		}
		exp.expectWrite(owner, s.Name, replaced, s.ResourceVersion)
	}
	for _, s := range plan.Delete {
		err := c.Delete(ctx, s.DeepCopy(), client.Preconditions{UID: &s.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete EndpointSlice %s of %s: %w", s.Name, owner, err)
		}
		exp.expect(owner, s.Name, s.ResourceVersion, true)
	}
	return nil
}
