package diagnose

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// isTerminal says whether the pod has finished for good: it never serves again.
func isTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func hasIP(pod *corev1.Pod) bool {
	return pod.Status.PodIP != "" || len(pod.Status.PodIPs) > 0
}

func podIPs(pod *corev1.Pod) []string {
	if len(pod.Status.PodIPs) == 0 && pod.Status.PodIP != "" {
		return []string{pod.Status.PodIP}
	}
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	return ips
}

func readyCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func isReady(pod *corev1.Pod) bool {
	c := readyCondition(pod)
	return c != nil && c.Status == corev1.ConditionTrue
}

// WhyNotReady says why a pod is not ready: its Ready condition (status, reason, message) and each
// container that is not ready with its state, e.g.
// `Ready=False (ContainersNotReady: containers with unready status: [app]); container app: running, readiness probe failing`.
func WhyNotReady(pod *corev1.Pod) string {
	var parts []string
	if c := readyCondition(pod); c == nil {
		parts = append(parts, "no Ready condition yet (phase "+string(pod.Status.Phase)+")")
	} else {
		cond := "Ready=" + string(c.Status)
		if detail := joinNonEmpty(": ", c.Reason, c.Message); detail != "" {
			cond += " (" + detail + ")"
		}
		parts = append(parts, cond)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !cs.Ready {
			parts = append(parts, "container "+cs.Name+": "+containerState(cs))
		}
	}
	return strings.Join(parts, "; ")
}

func containerState(cs corev1.ContainerStatus) string {
	switch {
	case cs.State.Waiting != nil:
		return "waiting (" + cs.State.Waiting.Reason + ")"
	case cs.State.Terminated != nil:
		return fmt.Sprintf("terminated (%s, exit code %d)", cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
	case cs.State.Running != nil:
		return "running, readiness probe failing"
	}
	return "not started"
}

// checkReadiness grades the selected pods: ready ones are evidence, not-ready ones are named with
// the failing condition and container; none ready is a problem (nothing receives traffic).
func checkReadiness(svc *corev1.Service, selected []*corev1.Pod) findings {
	var out findings
	var ready, notReady, noIP, terminating, finished []*corev1.Pod
	for _, pod := range selected {
		switch {
		case isTerminal(pod):
			finished = append(finished, pod)
		case !hasIP(pod):
			noIP = append(noIP, pod)
		case pod.DeletionTimestamp != nil:
			terminating = append(terminating, pod)
		case isReady(pod):
			ready = append(ready, pod)
		default:
			notReady = append(notReady, pod)
		}
	}
	if len(ready) > 0 {
		out.ok(CheckReadiness, "%d ready pod(s): %s", len(ready), nameList(podNames(ready)))
	}
	severity := Warning
	if len(ready) == 0 && !svc.Spec.PublishNotReadyAddresses {
		severity = Problem
	}
	fix := "kubectl describe pod NAME -n " + svc.Namespace + ": fix the failing container or its readiness probe"
	for _, pod := range notReady {
		out = append(out, Finding{Severity: severity, Check: CheckReadiness,
			Message: fmt.Sprintf("pod %s (%s) is not ready: %s", pod.Name, strings.Join(podIPs(pod), ","), WhyNotReady(pod)),
			Fix:     strings.Replace(fix, "NAME", pod.Name, 1)})
	}
	for _, pod := range noIP {
		out = append(out, Finding{Severity: severity, Check: CheckReadiness,
			Message: fmt.Sprintf("pod %s has no IP yet (phase %s): %s", pod.Name, pod.Status.Phase, WhyNotReady(pod)),
			Fix:     "kubectl describe pod " + pod.Name + " -n " + svc.Namespace + ": see why it is not scheduled or not started"})
	}
	for _, pod := range terminating {
		out.warn(CheckReadiness, fmt.Sprintf("pod %s is terminating: it gets new connections only while no other endpoint is ready", pod.Name), "")
	}
	if unready := len(notReady) + len(noIP) + len(terminating); severity == Problem && unready > 0 {
		consequence := "connections to the Service are refused"
		if slices.ContainsFunc(terminating, isReady) {
			consequence = "terminating pods serve until they exit, then connections to the Service are refused"
		}
		out.problem(CheckReadiness, fmt.Sprintf("none of the %d selected pod(s) is ready: %s", unready, consequence),
			"make at least one pod ready (see the pods above)")
	}
	if len(finished) > 0 && len(finished) == len(selected) {
		out.problem(CheckReadiness, fmt.Sprintf("all %d selected pod(s) have finished (phase Succeeded or Failed): %s", len(finished), nameList(podNames(finished))),
			"finished pods never serve: run the backend as a Deployment or StatefulSet, not as a Job or bare pod that exits")
	}
	if svc.Spec.PublishNotReadyAddresses && len(notReady) > 0 {
		out.ok(CheckReadiness, "publishNotReadyAddresses is set: not-ready pods still get traffic")
	}
	return out
}

// findPort resolves a Service port's targetPort on a pod as the endpoints controllers do: a number
// as is, a name against the containers' (and restartable init containers') named ports of the same
// protocol.
func findPort(pod *corev1.Pod, port corev1.ServicePort) (int32, bool) {
	if port.TargetPort.Type == intstr.Int {
		if port.TargetPort.IntVal == 0 {
			return port.Port, true
		}
		return port.TargetPort.IntVal, true
	}
	for _, c := range servingContainers(pod) {
		for _, cp := range c.Ports {
			if cp.Name == port.TargetPort.StrVal && protocolOfContainerPort(cp) == protocolOf(port) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// declaresPort says whether some container of the pod declares the number with the protocol.
func declaresPort(pod *corev1.Pod, number int32, protocol corev1.Protocol) bool {
	for _, c := range servingContainers(pod) {
		for _, cp := range c.Ports {
			if cp.ContainerPort == number && protocolOfContainerPort(cp) == protocol {
				return true
			}
		}
	}
	return false
}

// servingContainers are the containers that may serve: regular ones and restartable init
// (sidecar) containers.
func servingContainers(pod *corev1.Pod) []corev1.Container {
	containers := append([]corev1.Container(nil), pod.Spec.Containers...)
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			containers = append(containers, c)
		}
	}
	return containers
}

func protocolOfContainerPort(cp corev1.ContainerPort) corev1.Protocol {
	if cp.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return cp.Protocol
}

// declaredPorts lists a pod's container ports for messages: "http 8080/TCP, 9090/TCP".
func declaredPorts(pod *corev1.Pod) string {
	var ports []string
	for _, c := range servingContainers(pod) {
		for _, cp := range c.Ports {
			p := fmt.Sprintf("%d/%s", cp.ContainerPort, protocolOfContainerPort(cp))
			if cp.Name != "" {
				p = cp.Name + " " + p
			}
			ports = append(ports, p)
		}
	}
	if len(ports) == 0 {
		return "no ports"
	}
	return strings.Join(ports, ", ")
}

// unresolvedPods are the serving candidates (not terminal) on which a named targetPort does not resolve.
func unresolvedPods(port corev1.ServicePort, selected []*corev1.Pod) (unresolved, candidates []*corev1.Pod) {
	for _, pod := range selected {
		if isTerminal(pod) {
			continue
		}
		candidates = append(candidates, pod)
		if _, ok := findPort(pod, port); !ok {
			unresolved = append(unresolved, pod)
		}
	}
	return unresolved, candidates
}

// TargetPortUnresolved reports the named targetPorts of a Service that some or all of its selected
// pods do not declare (same name, same protocol): those pods get no endpoint for that port, and when
// none declares it the port refuses every connection. Numeric targetPorts always resolve (a number
// no container declares may still be listened on), so they are never reported here.
func TargetPortUnresolved(svc *corev1.Service, selectedPods []*corev1.Pod) (message string, found bool) {
	var parts []string
	for _, port := range svc.Spec.Ports {
		if part, ok := unresolvedTargetPort(port, selectedPods); ok {
			parts = append(parts, part)
		}
	}
	return strings.Join(parts, "; "), len(parts) > 0
}

// unresolvedTargetPort describes a named targetPort that some of the selected pods do not declare.
func unresolvedTargetPort(port corev1.ServicePort, selected []*corev1.Pod) (string, bool) {
	if port.TargetPort.Type != intstr.String {
		return "", false
	}
	unresolved, candidates := unresolvedPods(port, selected)
	if len(unresolved) == 0 {
		return "", false
	}
	scope := fmt.Sprintf("%d of %d selected pods", len(unresolved), len(candidates))
	if len(unresolved) == len(candidates) {
		scope = "any selected pod"
	}
	return fmt.Sprintf("targetPort %q of port %s is declared by no container port of %s: %s (%s declares %s)",
		port.TargetPort.StrVal, portLabel(port), scope, nameList(podNames(unresolved)), unresolved[0].Name, declaredPorts(unresolved[0])), true
}

// checkPorts grades each Service port against the selected pods' container ports.
func checkPorts(svc *corev1.Service, selected []*corev1.Pod) findings {
	var out findings
	var live []*corev1.Pod
	for _, pod := range selected {
		if !isTerminal(pod) {
			live = append(live, pod)
		}
	}
	if len(live) == 0 {
		return nil
	}
	for _, port := range svc.Spec.Ports {
		if port.TargetPort.Type == intstr.String {
			msg, unresolved := unresolvedTargetPort(port, live)
			if !unresolved {
				out.ok(CheckPorts, "port %s -> targetPort %q resolves on all %d selected pod(s)", portLabel(port), port.TargetPort.StrVal, len(live))
				continue
			}
			out.problem(CheckPorts, msg, fmt.Sprintf("name a container port %q (protocol %s) in the pod template, or set the Service's targetPort to a port the pods declare", port.TargetPort.StrVal, protocolOf(port)))
			continue
		}
		target, _ := findPort(live[0], port)
		declared := false
		for _, pod := range live {
			declared = declared || declaresPort(pod, target, protocolOf(port))
		}
		if declared {
			out.ok(CheckPorts, "port %s -> targetPort %d is declared by the selected pods", portLabel(port), target)
			continue
		}
		out.warn(CheckPorts, fmt.Sprintf("port %s -> targetPort %d/%s is declared by no container of the selected pods (%s declares %s); traffic works only if the process listens on %d anyway",
			portLabel(port), target, protocolOf(port), live[0].Name, declaredPorts(live[0]), target),
			fmt.Sprintf("check that the container listens on %d, then declare it in the pod template (or fix the Service's targetPort)", target))
	}
	return out
}

// joinNonEmpty joins the non-empty parts with sep.
func joinNonEmpty(sep string, parts ...string) string {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, sep)
}
