// Package upstreamdiff runs upstream's components and ours through the same scenarios, each on a
// control plane of its own, and reports every difference: kube-controller-manager's endpoint
// controllers against ours (the Endpoints and EndpointSlices they publish), and kube-apiserver's
// own ClusterIP assignment against our webhooks (the answers to the same Service requests). It
// needs kube-controller-manager, so it is not part of make test: run make test-upstream-diff
// (build tag upstreamdiff).
package upstreamdiff
