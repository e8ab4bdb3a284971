// Package endpointrules holds the rules that decide which pods back a Service and what the
// endpoints controllers publish for each of them, as upstream Kubernetes defines them: which pods
// a selector picks, how a targetPort resolves on a pod (FindPort), which pods are published at all
// (ShouldPodBeInEndpoints) and with which conditions, and the managed-by values that say who
// wrote an Endpoints object or an EndpointSlice.
//
// The endpoints controllers and the diagnose command both call this package, so that a check can
// never disagree with the controller it checks. It knows Kubernetes types only: no client, no
// controller-runtime.
//
// Objects read from the API server are defaulted (a Service port's protocol is TCP and its
// targetPort its port when left out); objects built in memory may not be. The rules here treat a
// missing protocol, a targetPort of 0 or "" as the API server would default them, so both kinds of
// object give the same answer. A Service's selector is "none" only when it is nil: a non-nil empty
// selector picks every pod of the namespace, as upstream's controllers read it.
package endpointrules
