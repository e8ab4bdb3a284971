package nodeagent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=servicecidrs,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// ServiceCIDRMismatch compares the Service CIDRs the agent was configured with to the cluster's
// (the CIDRs of its ServiceCIDR objects) as sets of prefixes, and describes the difference, or
// returns "" when they agree. The datapath drops packets to addresses of its Service CIDRs that no
// Service holds: a range the API server does not allocate from would black-hole real addresses,
// and a range it does allocate from that the agent lacks would leave its unallocated addresses
// routed off the node.
func ServiceCIDRMismatch(configured, cluster []string) (string, error) {
	want, err := canonicalPrefixes(configured)
	if err != nil {
		return "", fmt.Errorf("--service-cluster-ip-range: %w", err)
	}
	have, err := canonicalPrefixes(cluster)
	if err != nil {
		return "", fmt.Errorf("ServiceCIDR objects: %w", err)
	}
	if slices.Equal(want, have) {
		return "", nil
	}
	return fmt.Sprintf("the configured Service CIDRs %s disagree with the cluster's ServiceCIDR objects %s: "+
		"set the install's SERVICE_CIDR (--service-cluster-ip-range) to %s, or leave it empty to read them from the cluster",
		strings.Join(want, ","), strings.Join(have, ","), strings.Join(have, ",")), nil
}

// canonicalPrefixes parses CIDRs, masks them and returns them sorted and without duplicates.
func canonicalPrefixes(cidrs []string) ([]string, error) {
	out := make([]string, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q: %w", c, err)
		}
		out = append(out, p.Masked().String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ClusterServiceCIDRs reads the CIDRs of every ServiceCIDR object (networking.k8s.io/v1): the
// ranges the API server allocates ClusterIPs from. Objects being deleted still count, as the API
// server keeps their addresses until they are gone.
func ClusterServiceCIDRs(ctx context.Context, reader client.Reader) ([]string, error) {
	var list networkingv1.ServiceCIDRList
	if err := reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list ServiceCIDRs: %w", err)
	}
	var cidrs []string
	for _, sc := range list.Items {
		cidrs = append(cidrs, sc.Spec.CIDRs...)
	}
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("the cluster has no ServiceCIDR object")
	}
	return cidrs, nil
}
