package diagnose

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// endpointsExpected are the pods Endpoints list: those on which a Service port resolves.
func endpointsExpected(expected map[string]endpointrules.PublishedPod) map[string]endpointrules.PublishedPod {
	out := map[string]endpointrules.PublishedPod{}
	for ip, want := range expected {
		if want.ServesAnyPort {
			out[ip] = want
		}
	}
	return out
}

// endpointsAddresses are the IPs an Endpoints object lists, ready or not.
func endpointsAddresses(ep *corev1.Endpoints) (ready, notReady map[string]bool) {
	ready, notReady = map[string]bool{}, map[string]bool{}
	for _, subset := range ep.Subsets {
		for _, a := range subset.Addresses {
			ready[a.IP] = true
		}
		for _, a := range subset.NotReadyAddresses {
			notReady[a.IP] = true
		}
	}
	return ready, notReady
}

// sliceEndpoint is one address of the Service's EndpointSlices with its conditions.
type sliceEndpoint struct {
	slice                       string
	ready, serving, terminating bool
}

func sliceEndpoints(endpointSlices []*discoveryv1.EndpointSlice) map[string]sliceEndpoint {
	out := map[string]sliceEndpoint{}
	for _, s := range endpointSlices {
		for _, e := range s.Endpoints {
			c := e.Conditions
			se := sliceEndpoint{slice: s.Name, ready: c.Ready == nil || *c.Ready,
				serving:     c.Serving == nil && (c.Ready == nil || *c.Ready) || c.Serving != nil && *c.Serving,
				terminating: c.Terminating != nil && *c.Terminating}
			for _, addr := range e.Addresses {
				out[addr] = se
			}
		}
	}
	return out
}

func sliceNames(endpointSlices []*discoveryv1.EndpointSlice) string {
	names := make([]string, 0, len(endpointSlices))
	for _, s := range endpointSlices {
		names = append(names, s.Name)
	}
	return endpointrules.NameList(names)
}

const fixEndpointsController = "the endpoints controller is behind or not running: check that kube-clusterip runs with --controllers=endpoints (kubectl logs of its Deployment)"

// checkSelectorEndpoints compares the Endpoints and EndpointSlices of a Service with a selector to
// what its pods say.
func checkSelectorEndpoints(svc *corev1.Service, selected []*corev1.Pod, ep *corev1.Endpoints, endpointSlices []*discoveryv1.EndpointSlice) findings {
	var out findings
	// Endpoints list the primary family's addresses, EndpointSlices those of every family.
	var primary []corev1.IPFamily
	if len(svc.Spec.IPFamilies) > 0 {
		primary = svc.Spec.IPFamilies[:1]
	}
	expected := endpointrules.ExpectedEndpoints(svc, selected, svc.Spec.IPFamilies)
	if ep == nil && len(endpointSlices) == 0 {
		out.problem(CheckEndpoints, fmt.Sprintf("no Endpoints and no EndpointSlices exist for the Service (kubectl get endpointslices -l %s=%s)", discoveryv1.LabelServiceName, svc.Name), fixEndpointsController)
		return out
	}
	if ep == nil {
		out.warn(CheckEndpoints, "no Endpoints object (kubectl get endpoints shows nothing); the datapath reads EndpointSlices, so traffic is not affected", fixEndpointsController)
	} else {
		out = append(out, compareEndpoints(svc, ep, endpointsExpected(endpointrules.ExpectedEndpoints(svc, selected, primary)))...)
	}
	if len(endpointSlices) == 0 {
		out.problem(CheckEndpointSlices, fmt.Sprintf("no EndpointSlice labeled %s=%s: the datapath has no endpoints for the Service", discoveryv1.LabelServiceName, svc.Name), fixEndpointsController)
		return out
	}
	out = append(out, twoControllers(endpointSlices)...)
	return append(out, compareSlices(endpointSlices, expected)...)
}

// twoControllers warns when the Service's slices come from more than one controller: every proxy
// merges them, so the endpoints of the one no longer updated keep getting traffic.
func twoControllers(endpointSlices []*discoveryv1.EndpointSlice) findings {
	byManager := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range endpointSlices {
		byManager[s.Labels[discoveryv1.LabelManagedBy]] = append(byManager[s.Labels[discoveryv1.LabelManagedBy]], s)
	}
	if len(byManager) < 2 {
		return nil
	}
	var parts []string
	for _, manager := range slices.Sorted(maps.Keys(byManager)) {
		parts = append(parts, fmt.Sprintf("%s by %q", sliceNames(byManager[manager]), manager))
	}
	var out findings
	out.warn(CheckEndpointSlices, "the Service's EndpointSlices come from more than one controller ("+strings.Join(parts, "; ")+
		"): every proxy uses them all, so the endpoints of one no longer updated still get traffic",
		"run one endpoints controller: turn kube-controller-manager's off (--controllers=*,-endpoint,-endpointslice,-endpointslicemirroring) "+
			"while kube-clusterip's run; kube-clusterip deletes the slices they wrote before it started")
	return out
}

func compareEndpoints(svc *corev1.Service, ep *corev1.Endpoints, expected map[string]endpointrules.PublishedPod) findings {
	var out findings
	ready, notReady := endpointsAddresses(ep)
	truncated := ep.Annotations[corev1.EndpointsOverCapacity] != ""
	var wrong []string
	for _, ip := range sortedIPs(ready, notReady) {
		want, known := expected[ip]
		switch {
		case !known:
			wrong = append(wrong, "lists "+ip+" that no selected pod has")
		case ready[ip] && !want.Ready:
			wrong = append(wrong, fmt.Sprintf("lists not-ready pod %s (%s) as ready", want.Pod.Name, ip))
		case notReady[ip] && want.Ready:
			wrong = append(wrong, fmt.Sprintf("lists ready pod %s (%s) as not ready", want.Pod.Name, ip))
		}
	}
	if !truncated {
		for _, ip := range slices.Sorted(maps.Keys(expected)) {
			want := expected[ip]
			if !ready[ip] && !notReady[ip] && (want.Ready || !want.Terminating) {
				wrong = append(wrong, fmt.Sprintf("misses pod %s (%s)", want.Pod.Name, ip))
			}
		}
	}
	if len(wrong) > 0 {
		out.problem(CheckEndpoints, "Endpoints "+ep.Name+" disagree with the pods: "+strings.Join(wrong, "; "), fixEndpointsController)
	} else {
		out.ok(CheckEndpoints, "Endpoints %s list %d ready and %d not-ready address(es), as the pods say", ep.Name, len(ready), len(notReady))
	}
	if truncated {
		out.warn(CheckEndpoints, fmt.Sprintf("Endpoints %s are truncated (%s=%s): they list %d addresses, the EndpointSlices list them all",
			ep.Name, corev1.EndpointsOverCapacity, ep.Annotations[corev1.EndpointsOverCapacity], len(ready)+len(notReady)),
			fmt.Sprintf("read kubectl get endpointslices -l %s=%s -n %s instead of kubectl get endpoints", discoveryv1.LabelServiceName, svc.Name, svc.Namespace))
	}
	return out
}

func compareSlices(endpointSlices []*discoveryv1.EndpointSlice, expected map[string]endpointrules.PublishedPod) findings {
	var out findings
	have := sliceEndpoints(endpointSlices)
	var wrong []string
	var readyCount, servingTerminating int
	for _, ip := range slices.Sorted(maps.Keys(have)) {
		got := have[ip]
		if got.ready {
			readyCount++
		} else if got.serving && got.terminating {
			servingTerminating++
		}
		want, known := expected[ip]
		switch {
		case !known:
			wrong = append(wrong, fmt.Sprintf("%s lists %s that no selected pod has", got.slice, ip))
		case got.ready != want.Ready || got.serving != want.Serving || got.terminating != want.Terminating:
			wrong = append(wrong, fmt.Sprintf("%s says pod %s (%s) is %s, the pod is %s", got.slice, want.Pod.Name, ip,
				conditions(got.ready, got.serving, got.terminating), conditions(want.Ready, want.Serving, want.Terminating)))
		}
	}
	for _, ip := range slices.Sorted(maps.Keys(expected)) {
		// A pod on which no port resolves may sit in a slice without ports, or nowhere.
		if _, ok := have[ip]; !ok && expected[ip].ServesAnyPort {
			wrong = append(wrong, fmt.Sprintf("no slice lists pod %s (%s)", expected[ip].Pod.Name, ip))
		}
	}
	if len(wrong) > 0 {
		out.problem(CheckEndpointSlices, "EndpointSlices disagree with the pods: "+strings.Join(wrong, "; "), fixEndpointsController)
		return out
	}
	out.ok(CheckEndpointSlices, "EndpointSlice(s) %s list %d endpoint(s): %d ready, %d serving while terminating, as the pods say",
		sliceNames(endpointSlices), len(have), readyCount, servingTerminating)
	return out
}

func conditions(ready, serving, terminating bool) string {
	return fmt.Sprintf("ready=%t serving=%t terminating=%t", ready, serving, terminating)
}

// checkSelectorlessEndpoints checks a Service without a selector: its user-written Endpoints exist,
// list ready addresses, and are mirrored into EndpointSlices the datapath reads.
func checkSelectorlessEndpoints(svc *corev1.Service, ep *corev1.Endpoints, endpointSlices []*discoveryv1.EndpointSlice) findings {
	var out findings
	if ep == nil {
		if len(endpointSlices) == 0 {
			out.problem(CheckEndpoints, "the Service has no selector and no Endpoints object "+svc.Name+" exists: nothing receives its traffic",
				fmt.Sprintf("create an Endpoints object named %s in namespace %s listing the backend addresses (or EndpointSlices labeled %s=%s), or give the Service a selector",
					svc.Name, svc.Namespace, discoveryv1.LabelServiceName, svc.Name))
			return out
		}
		have := sliceEndpoints(endpointSlices)
		out.ok(CheckEndpointSlices, "the Service has no selector; user-managed EndpointSlice(s) %s list %d endpoint(s)", sliceNames(endpointSlices), len(have))
		return out
	}
	ready, notReady := endpointsAddresses(ep)
	if len(ready) == 0 {
		out.problem(CheckEndpoints, fmt.Sprintf("the Service has no selector and its Endpoints %s list no ready address (%d not ready)", ep.Name, len(notReady)),
			"add the backends' addresses to subsets[].addresses of Endpoints "+ep.Name)
	} else {
		out.ok(CheckEndpoints, "the Service has no selector; its Endpoints %s list %d ready address(es): %s", ep.Name, len(ready), endpointrules.NameList(sortedIPs(ready, nil)))
	}
	if ep.Labels[discoveryv1.LabelSkipMirror] == "true" || ep.Labels[endpointrules.LabelEndpointsManagedBy] != "" {
		out.warn(CheckEndpointSlices, fmt.Sprintf("Endpoints %s are not mirrored by design (label %s=true or %s set): the datapath reads only EndpointSlices", ep.Name, discoveryv1.LabelSkipMirror, endpointrules.LabelEndpointsManagedBy),
			"write EndpointSlices for the Service yourself, or remove the label")
		return out
	}
	var mirrored []*discoveryv1.EndpointSlice
	for _, s := range endpointSlices {
		if m := s.Labels[discoveryv1.LabelManagedBy]; m == endpointrules.MirroringControllerName || m == endpointrules.UpstreamMirroringControllerName {
			mirrored = append(mirrored, s)
		}
	}
	if len(mirrored) == 0 {
		out.problem(CheckEndpointSlices, fmt.Sprintf("Endpoints %s are not mirrored: no EndpointSlice labeled %s=%s and managed by %s, so the datapath has no endpoints",
			ep.Name, discoveryv1.LabelServiceName, svc.Name, endpointrules.MirroringControllerName),
			"run kube-clusterip with --controllers=endpoints and without --disable-endpoint-mirroring")
		return out
	}
	have := sliceEndpoints(mirrored)
	var wrong []string
	for _, ip := range sortedIPs(ready, notReady) {
		got, ok := have[ip]
		if !ok {
			wrong = append(wrong, "misses "+ip)
		} else if got.ready != ready[ip] {
			wrong = append(wrong, fmt.Sprintf("says %s is ready=%t", ip, got.ready))
		}
	}
	for _, ip := range slices.Sorted(maps.Keys(have)) {
		if !ready[ip] && !notReady[ip] {
			wrong = append(wrong, "lists "+ip+" that the Endpoints do not")
		}
	}
	if len(wrong) > 0 {
		out.problem(CheckEndpointSlices, "mirrored EndpointSlices disagree with Endpoints "+ep.Name+": "+strings.Join(wrong, "; "), fixEndpointsController)
		return out
	}
	out.ok(CheckEndpointSlices, "Endpoints %s are mirrored into EndpointSlice(s) %s (managed by %s)", ep.Name, sliceNames(mirrored), mirrored[0].Labels[discoveryv1.LabelManagedBy])
	return out
}

func sortedIPs(sets ...map[string]bool) []string {
	seen := map[string]bool{}
	for _, set := range sets {
		for ip := range set {
			seen[ip] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
