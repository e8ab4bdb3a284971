package endpoints

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// mirroringReconciler mirrors the user-written Endpoints of a selectorless Service into
// EndpointSlices, and removes mirrored slices that no longer should exist.
type mirroringReconciler struct {
	// Reader reads from the manager's cache.
	Reader client.Reader
	// SliceWriter writes the mirrored EndpointSlices, through a client with a rate limit of its
	// own (see writerClient).
	SliceWriter           client.Writer
	Recorder              events.EventRecorder
	MaxEndpointsPerSubset int

	expectations *writeExpectations
	// upstreamSlices are the slices kube-controller-manager mirrored, retired once ours are written.
	upstreamSlices upstreamLeftovers
}

// Reconcile handles the Endpoints (and Service) named by req.
func (r *mirroringReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mirrored, err := listSlices(ctx, r.Reader, req.Namespace, sliceOwnerKey(endpointrules.MirroringControllerName, req.Name))
	if err != nil {
		return ctrl.Result{}, err
	}
	ep := &corev1.Endpoints{}
	if err := r.Reader.Get(ctx, req.NamespacedName, ep, client.UnsafeDisableDeepCopy); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get Endpoints %s: %w", req, err)
		}
		ep = nil
	}
	svc := &corev1.Service{}
	if err := r.Reader.Get(ctx, req.NamespacedName, svc, client.UnsafeDisableDeepCopy); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("get Service %s: %w", req, err)
		}
		svc = nil
	}
	if !r.expectations.satisfied(req.NamespacedName, cachedVersions(nil, mirrored)) {
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}
	plan := SlicePlan{Delete: mirrored}
	if ShouldMirror(ep, svc) {
		groups, skipped := MirroredEndpointGroups(ep, r.MaxEndpointsPerSubset)
		r.reportSkipped(ep, skipped)
		plan = PlanMirroredSlices(ep, groups, mirrored)
	}
	r.expectations.begin(req.NamespacedName)
	defer r.expectations.end(req.NamespacedName)
	err = applySlicePlan(ctx, r.SliceWriter, r.expectations, req.NamespacedName, plan)
	if err == nil {
		err = r.upstreamSlices.retire(ctx, r.Reader, r.SliceWriter, req.NamespacedName)
	}
	if err != nil && staleWrite(err) {
		return ctrl.Result{RequeueAfter: staleCacheRetry}, nil
	}
	return ctrl.Result{}, err
}

// reportSkipped tells the Endpoints' owner, as upstream does, which addresses are not mirrored.
func (r *mirroringReconciler) reportSkipped(ep *corev1.Endpoints, skipped MirrorSkipped) {
	if skipped.InvalidIP > 0 {
		r.Recorder.Eventf(ep, nil, corev1.EventTypeWarning, "InvalidIPAddress", "MirrorEndpointSlices",
			"Skipped %d invalid IP addresses when mirroring to EndpointSlices", skipped.InvalidIP)
	}
	if skipped.OverCapacity > 0 {
		r.Recorder.Eventf(ep, nil, corev1.EventTypeWarning, "TooManyAddressesToMirror", "MirrorEndpointSlices",
			"A max of %d addresses can be mirrored to EndpointSlices per Endpoints subset. %d addresses were skipped",
			r.MaxEndpointsPerSubset, skipped.OverCapacity)
	}
}
