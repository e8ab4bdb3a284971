package endpoints

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// upstreamLeftovers deletes a Service's EndpointSlices that kube-controller-manager's controller
// (managedBy: its EndpointSlice or mirroring controller) wrote before ours started. Taking over a
// live cluster, its controllers are off (our prerequisite), so nothing updates those slices any
// more, and every proxy would go on sending to their endpoints beside ours: pods long gone among
// them. Slices it wrote since we started (before: our start, to the second below it, as
// creation times go) stay: its controller still runs, which its operator must fix, and deleting
// them would only make it write them again.
type upstreamLeftovers struct {
	managedBy string
	before    time.Time
}

func newUpstreamLeftovers(managedBy string, startedAt time.Time) upstreamLeftovers {
	return upstreamLeftovers{managedBy: managedBy, before: startedAt.Truncate(time.Second)}
}

// retire deletes owner's leftover slices; call it once ours are written, so that the Service's
// endpoints are never missing.
func (u upstreamLeftovers) retire(ctx context.Context, reader client.Reader, writer client.Writer, owner types.NamespacedName) error {
	slices, err := listSlices(ctx, reader, owner.Namespace, sliceOwnerKey(u.managedBy, owner.Name))
	if err != nil {
		return err
	}
	for _, s := range slices {
		if !s.CreationTimestamp.Time.Before(u.before) {
			continue
		}
		if err := writer.Delete(ctx, s.DeepCopy(), client.Preconditions{UID: &s.UID}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete EndpointSlice %s that %s left for %s: %w", s.Name, u.managedBy, owner, err)
		}
		log.FromContext(ctx).Info("deleted an EndpointSlice that kube-controller-manager left behind",
			"endpointSlice", s.Name, "managedBy", u.managedBy)
	}
	return nil
}
