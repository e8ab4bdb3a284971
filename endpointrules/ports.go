package endpointrules

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ServicePortProtocol is the port's protocol, TCP when unset (as the API server defaults it).
func ServicePortProtocol(p *corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// ContainerPortProtocol is the container port's protocol, TCP when unset.
func ContainerPortProtocol(p *corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// TargetPort is the port's targetPort, the port number itself when unset (0 or ""), as the API
// server defaults it.
func TargetPort(p *corev1.ServicePort) intstr.IntOrString {
	if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 || p.TargetPort.Type == intstr.String && p.TargetPort.StrVal == "" {
		return intstr.FromInt32(p.Port)
	}
	return p.TargetPort
}

// FindPort resolves a Service port's targetPort on a pod: a number as is, a name against the named
// ports of the same protocol of its containers, then of its restartable init (sidecar) containers.
func FindPort(pod *corev1.Pod, svcPort *corev1.ServicePort) (int32, error) {
	target := TargetPort(svcPort)
	if target.Type == intstr.Int {
		return target.IntVal, nil
	}
	protocol := ServicePortProtocol(svcPort)
	for _, c := range ServingContainers(pod) {
		for i := range c.Ports {
			if cp := &c.Ports[i]; cp.Name == target.StrVal && ContainerPortProtocol(cp) == protocol {
				return cp.ContainerPort, nil
			}
		}
	}
	return 0, fmt.Errorf("pod %s/%s has no container port named %q with protocol %s", pod.Namespace, pod.Name, target.StrVal, protocol)
}

// ServesAnyPort says whether at least one of the Service's ports resolves on the pod; a Service
// without ports counts as served.
func ServesAnyPort(svc *corev1.Service, pod *corev1.Pod) bool {
	for i := range svc.Spec.Ports {
		if _, err := FindPort(pod, &svc.Spec.Ports[i]); err == nil {
			return true
		}
	}
	return len(svc.Spec.Ports) == 0
}

// ServingContainers are the containers whose ports may serve a Service: the regular ones, then the
// restartable init (sidecar) containers.
func ServingContainers(pod *corev1.Pod) []corev1.Container {
	containers := append([]corev1.Container(nil), pod.Spec.Containers...)
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			containers = append(containers, c)
		}
	}
	return containers
}
