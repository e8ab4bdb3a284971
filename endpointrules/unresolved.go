package endpointrules

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// DeclaredPorts lists a pod's container ports for messages: "http 8080/TCP, 9090/TCP".
func DeclaredPorts(pod *corev1.Pod) string {
	var ports []string
	for _, c := range ServingContainers(pod) {
		for _, cp := range c.Ports {
			p := fmt.Sprintf("%d/%s", cp.ContainerPort, ContainerPortProtocol(&cp))
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
		if IsPodTerminal(pod) {
			continue
		}
		candidates = append(candidates, pod)
		if _, err := FindPort(pod, &port); err != nil {
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
		if part, ok := UnresolvedTargetPort(port, selectedPods); ok {
			parts = append(parts, part)
		}
	}
	return strings.Join(parts, "; "), len(parts) > 0
}

// UnresolvedTargetPort describes a named targetPort that some of the selected pods do not declare.
func UnresolvedTargetPort(port corev1.ServicePort, selected []*corev1.Pod) (string, bool) {
	if TargetPort(&port).Type != intstr.String {
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
		port.TargetPort.StrVal, PortLabel(port), scope, NameList(PodNames(unresolved)), unresolved[0].Name, DeclaredPorts(unresolved[0])), true
}

// PortLabel names a Service port for messages: "80/TCP (http)".
func PortLabel(p corev1.ServicePort) string {
	label := fmt.Sprintf("%d/%s", p.Port, ServicePortProtocol(&p))
	if p.Name != "" {
		label += " (" + p.Name + ")"
	}
	return label
}
