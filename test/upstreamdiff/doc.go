// Package upstreamdiff runs kube-controller-manager's endpoint controllers and ours through the
// same scenarios, each on a control plane of its own, and reports every difference in the
// Endpoints and EndpointSlices they publish. It needs kube-controller-manager, so it is not part
// of make test: run make test-upstream-diff (build tag upstreamdiff).
package upstreamdiff
