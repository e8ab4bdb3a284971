// Package diagnose runs the "Service not accessible" checklist for one Service and reports what
// it found: does the Service exist, which pool its ClusterIP came from, which DNS names and
// environment variables point at it, does its selector match pods (and which pods nearly match),
// are they ready, do the targetPorts resolve, do Endpoints and EndpointSlices agree with the pods,
// and, on a node, does the nftables table send the ClusterIP to those endpoints.
//
// The package has a pure core and a thin shell:
//
//   - Diagnose(Inputs) turns plain objects (Service, Pods, Endpoints, EndpointSlices,
//     ClusterIPPools, an optional parsed nftables table) into a Report of OK / WARNING / PROBLEM
//     findings. SelectorMatchesNoPod and TargetPortUnresolved are the two most common findings as
//     single functions, for a controller that records them as Events.
//   - Main reads the cluster through the user's kubeconfig, calls Diagnose and renders the Report as
//     text or JSON, with exit status 0 (healthy), 1 (a problem) or 2 (usage or access error).
package diagnose
