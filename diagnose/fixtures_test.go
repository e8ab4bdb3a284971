package diagnose

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

const testNamespace = "shop"

// backendService is a ClusterIP Service selecting app=backend, port 80 -> 8080.
func backendService(edits ...func(*corev1.Service)) *corev1.Service {
	return kit.MakeService("backend", testNamespace).ClusterIP("10.96.0.10").Selector(backendLabels).
		SessionAffinity(corev1.ServiceAffinityNone).TCPPort("", 80, 8080).Mutate(edits...).Obj()
}

// testPod is a running pod with one container "app" declaring the ports; ready or not.
func testPod(name, ip string, labels map[string]string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	return kit.MakePod(name, testNamespace).Labels(labels).IPs(ip).Ready(ready).ContainerPorts(ports...).Obj()
}

func inNamespace(pod *corev1.Pod, namespace string) *corev1.Pod {
	pod.Namespace = namespace
	return pod
}

var backendLabels = map[string]string{"app": "backend"}

// endpointsFor is the Endpoints object the endpoints controller writes: ready and not-ready IPs.
func endpointsFor(svc *corev1.Service, ready, notReady []string, port int32) *corev1.Endpoints {
	subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Port: port, Protocol: corev1.ProtocolTCP}}}
	for _, ip := range ready {
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: ip})
	}
	for _, ip := range notReady {
		subset.NotReadyAddresses = append(subset.NotReadyAddresses, corev1.EndpointAddress{IP: ip})
	}
	return &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace}, Subsets: []corev1.EndpointSubset{subset}}
}

// sliceEndpoint is one endpoint of an EndpointSlice with its conditions.
type sliceEP struct {
	ip                          string
	ready, serving, terminating bool
	node                        string
}

// sliceFor is an EndpointSlice of the Service, managed by managedBy, with one unnamed TCP port.
func sliceFor(svc *corev1.Service, managedBy string, port int32, endpoints ...sliceEP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-abcde", Namespace: svc.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: managedBy}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, e := range endpoints {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{
			Ready: ptr.To(e.ready), Serving: ptr.To(e.serving), Terminating: ptr.To(e.terminating)}}
		if e.node != "" {
			ep.NodeName = ptr.To(e.node)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func readyEP(ip string) sliceEP { return sliceEP{ip: ip, ready: true, serving: true} }

func notReadyEP(ip string) sliceEP { return sliceEP{ip: ip} }
