package diagnose

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// WhyNotReady says why a pod is not ready: its Ready condition (status, reason, message) and each
// container that is not ready with its state, e.g.
// `Ready=False (ContainersNotReady: containers with unready status: [app]); container app: running, readiness probe failing`.
func WhyNotReady(pod *corev1.Pod) string {
	var parts []string
	if c := endpointrules.PodReadyCondition(pod); c == nil {
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
		case endpointrules.IsPodTerminal(pod):
			finished = append(finished, pod)
		case !endpointrules.HasPodIP(pod):
			noIP = append(noIP, pod)
		case pod.DeletionTimestamp != nil:
			terminating = append(terminating, pod)
		case endpointrules.IsPodReady(pod):
			ready = append(ready, pod)
		default:
			notReady = append(notReady, pod)
		}
	}
	if len(ready) > 0 {
		out.ok(CheckReadiness, "%d ready pod(s): %s", len(ready), endpointrules.NameList(endpointrules.PodNames(ready)))
	}
	severity := Warning
	if len(ready) == 0 && !svc.Spec.PublishNotReadyAddresses {
		severity = Problem
	}
	fix := "kubectl describe pod NAME -n " + svc.Namespace + ": fix the failing container or its readiness probe"
	for _, pod := range notReady {
		out = append(out, Finding{Severity: severity, Check: CheckReadiness,
			Message: fmt.Sprintf("pod %s (%s) is not ready: %s", pod.Name, strings.Join(endpointrules.PodIPs(pod), ","), WhyNotReady(pod)),
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
		if slices.ContainsFunc(terminating, endpointrules.IsPodReady) {
			consequence = "terminating pods serve until they exit, then connections to the Service are refused"
		}
		out.problem(CheckReadiness, fmt.Sprintf("none of the %d selected pod(s) is ready: %s", unready, consequence),
			"make at least one pod ready (see the pods above)")
	}
	if len(finished) > 0 && len(finished) == len(selected) {
		out.problem(CheckReadiness, fmt.Sprintf("all %d selected pod(s) have finished (phase Succeeded or Failed): %s", len(finished), endpointrules.NameList(endpointrules.PodNames(finished))),
			"finished pods never serve: run the backend as a Deployment or StatefulSet, not as a Job or bare pod that exits")
	}
	if svc.Spec.PublishNotReadyAddresses && len(notReady) > 0 {
		out.ok(CheckReadiness, "publishNotReadyAddresses is set: not-ready pods still get traffic")
	}
	return out
}

// declaresPort says whether some container of the pod declares the number with the protocol.
func declaresPort(pod *corev1.Pod, number int32, protocol corev1.Protocol) bool {
	for _, c := range endpointrules.ServingContainers(pod) {
		for _, cp := range c.Ports {
			if cp.ContainerPort == number && endpointrules.ContainerPortProtocol(&cp) == protocol {
				return true
			}
		}
	}
	return false
}

// checkPorts grades each Service port against the selected pods' container ports.
func checkPorts(svc *corev1.Service, selected []*corev1.Pod) findings {
	var out findings
	var live []*corev1.Pod
	for _, pod := range selected {
		if !endpointrules.IsPodTerminal(pod) {
			live = append(live, pod)
		}
	}
	if len(live) == 0 {
		return nil
	}
	for _, port := range svc.Spec.Ports {
		if port.TargetPort.Type == intstr.String {
			msg, unresolved := endpointrules.UnresolvedTargetPort(port, live)
			if !unresolved {
				out.ok(CheckPorts, "port %s -> targetPort %q resolves on all %d selected pod(s)", endpointrules.PortLabel(port), port.TargetPort.StrVal, len(live))
				continue
			}
			out.problem(CheckPorts, msg, fmt.Sprintf("name a container port %q (protocol %s) in the pod template, or set the Service's targetPort to a port the pods declare", port.TargetPort.StrVal, endpointrules.ServicePortProtocol(&port)))
			continue
		}
		target, _ := endpointrules.FindPort(live[0], &port)
		declared := false
		for _, pod := range live {
			declared = declared || declaresPort(pod, target, endpointrules.ServicePortProtocol(&port))
		}
		if declared {
			out.ok(CheckPorts, "port %s -> targetPort %d is declared by the selected pods", endpointrules.PortLabel(port), target)
			continue
		}
		out.warn(CheckPorts, fmt.Sprintf("port %s -> targetPort %d/%s is declared by no container of the selected pods (%s declares %s); traffic works only if the process listens on %d anyway",
			endpointrules.PortLabel(port), target, endpointrules.ServicePortProtocol(&port), live[0].Name, endpointrules.DeclaredPorts(live[0]), target),
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
