package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-clusterip/kube-clusterip/allocator"
	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
)

// kube-apiserver's own words for the refusals it shares with ours.
const (
	upstreamOutOfRange    = "the provided network does not match the current range"
	upstreamFamilyMissing = "not configured on this cluster"
	upstreamNotDualStack  = "this cluster is not configured for dual-stack services"
)

var serviceKind = schema.GroupKind{Kind: "Service"}

// refusal answers a request our webhooks refuse as kube-apiserver answers a request it refuses
// for the same fault, so that clients see the same status and kubectl prints it alike (`The
// Service "b" is invalid: spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP
// 10.96.0.10: provided IP is already allocated...`): 422 Invalid naming the field at fault for a
// requested address or a family the pool cannot give, 500 InternalError for a full pool. What
// upstream never refuses (a namespace no pool selects) stays 403 Forbidden. Our explanation
// (the holder, the pool, what to do) follows upstream's words.
func refusal(svc *corev1.Service, ae *AdmissionError) admission.Response {
	name := svc.Name
	if name == "" { // generateName: the API server names the Service after admission
		name = svc.GenerateName
	}
	var status *apierrors.StatusError
	var fe *FamilyError
	switch {
	case ae.IP.IsValid():
		status = apierrors.NewInvalid(serviceKind, name, field.ErrorList{refusedIPCause(svc, ae)})
	case errors.As(ae.Err, &fe) && fe.causes[0].field != nil:
		var causes field.ErrorList
		for _, c := range fe.causes {
			why := c.msg
			if ae.Pool == ipamv1alpha1.DefaultPoolName { // the default pool has the cluster's ServiceCIDRs
				why = c.upstream + ": " + why
			}
			causes = append(causes, field.Invalid(c.field, c.value, why))
		}
		status = apierrors.NewInvalid(serviceKind, name, causes)
	case ae.Reason == ReasonFull:
		status = apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP for Service %q: %w", name, ae))
	default:
		return admission.Denied(ae.Error())
	}
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: false, Result: &status.ErrStatus}}
}

// refusedIPCause is the field error of a refused requested address, worded as kube-apiserver's
// allocator words it: spec.clusterIPs[i] for a family the cluster lacks, else spec.clusterIPs.
func refusedIPCause(svc *corev1.Service, ae *AdmissionError) *field.Error {
	value := svc.Spec.ClusterIPs
	if len(value) == 0 {
		value = []string{svc.Spec.ClusterIP}
	}
	path := field.NewPath("spec", "clusterIPs")
	if ae.Reason == ReasonFamily {
		why := ae.Error()
		if ae.Pool == ipamv1alpha1.DefaultPoolName {
			why = fmt.Sprintf("%s is %s: %s", allocator.FamilyOf(ae.IP), upstreamFamilyMissing, why)
		}
		return field.Invalid(path.Index(max(0, slices.Index(value, ae.IP.String()))), value, why)
	}
	why := ae.Error()
	if errors.Is(ae, allocator.ErrNotInRange) && !strings.Contains(why, upstreamOutOfRange) {
		why = upstreamOutOfRange + ": " + why
	}
	return field.Invalid(path, value, fmt.Sprintf("failed to allocate IP %s: %s", ae.IP, why))
}

// refusedIP records on err, an AdmissionError, the requested address it refuses.
func refusedIP(err error, ip netip.Addr) {
	if ae := (*AdmissionError)(nil); errors.As(err, &ae) && !ae.IP.IsValid() {
		ae.IP = ip
	}
}
