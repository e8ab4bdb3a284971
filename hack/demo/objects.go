package main

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// The demo's objects: those of config/samples/services.yaml that carry traffic here, plus the
// Pods a Deployment would create (no kube-controller-manager runs, so the demo plays the
// ReplicaSet and binds Pods to the node itself).
const (
	backendPort   = 8080
	backendLabel  = "backend"
	backendPods   = 3
	clientPodName = "client"
)

var backendPodNames = []string{"backend-1", "backend-2", "backend-3"}

// backendService is port 80 to the pods' 8080 over the pods labelled app=backend.
func backendService() *corev1.Service {
	return simpleService(metav1.NamespaceDefault, "backend-service", backendLabel).Obj()
}

// stickyService selects the same pods with ClientIP affinity: a client keeps its pod.
func stickyService() *corev1.Service {
	return kit.MakeService("sticky-service", metav1.NamespaceDefault).Selector(map[string]string{"app": backendLabel}).
		ClientIPAffinity(3600).TCPPort("", 80, backendPort).Obj()
}

// externalDatabaseService has no selector: its Endpoints are written by the user and mirrored
// into an EndpointSlice.
func externalDatabaseService() *corev1.Service {
	return kit.MakeService("external-database", metav1.NamespaceDefault).TCPPort("", databasePort, databasePort).Obj()
}

// externalDatabaseEndpoints points the Service at the demo's "database" namespace, outside
// the cluster's pod CIDR.
func externalDatabaseEndpoints() *corev1.Endpoints {
	return &corev1.Endpoints{ //nolint:staticcheck // the Endpoints API is what users write for selectorless Services
		ObjectMeta: metav1.ObjectMeta{Name: "external-database", Namespace: metav1.NamespaceDefault},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: databaseIP}},
			Ports:     []corev1.EndpointPort{{Port: databasePort}},
		}},
	}
}

// backendPod is one replica of the backend, bound to the demo node.
func backendPod(name string) *corev1.Pod {
	return demoPod(name, map[string]string{"app": backendLabel}, []corev1.ContainerPort{{Name: "http", ContainerPort: backendPort}})
}

// clientPod is where the demo's requests come from.
func clientPod() *corev1.Pod {
	return demoPod(clientPodName, map[string]string{"app": "client"}, nil)
}

func demoPod(name string, labels map[string]string, ports []corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   nodeName,
			Containers: []corev1.Container{{Name: "app", Image: "demo/answer-with-pod-name", Ports: ports}},
		},
	}
}

// The cluster DNS: CoreDNS runs on the node (a hostNetwork pod, as the demo's pods cannot reach
// the API server on the node's loopback) behind the conventional kube-system/kube-dns ClusterIP.
const (
	clusterDNSIP     = "10.96.0.10"
	clusterDomain    = "cluster.local"
	kubeDNSLabel     = "kube-dns"
	otherNamespace   = "inventory"
	frontendPodName  = "frontend-1"
	multiPortPodName = "multi-1"
	inventoryPodName = "inventory-1"
	// proxyArg makes the kubelet stand-in run the container as a process in the pod that answers
	// each request with what URL answered (the frontend calling the backend).
	proxyArg = "--proxy-to="
)

// multiPortPorts are multi-port-service's ports: Service port, pod port, name.
var multiPortPorts = []struct {
	port, targetPort int32
	name             string
}{{80, 8080, "http"}, {443, 8443, "https"}, {9090, 9090, "metrics"}}

// kubeDNSService is kubeadm's kube-dns Service: DNS over UDP and TCP at 10.96.0.10.
func kubeDNSService() *corev1.Service {
	return kit.MakeService("kube-dns", metav1.NamespaceSystem).Labels(map[string]string{"k8s-app": kubeDNSLabel}).
		ClusterIP(clusterDNSIP).Selector(map[string]string{"k8s-app": kubeDNSLabel}).
		Port(corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolUDP}).
		TCPPort("dns-tcp", 53, 53).Obj()
}

// coreDNSPod is the pod of the CoreDNS process the demo runs on the node.
func coreDNSPod() *corev1.Pod {
	pod := demoPod("coredns", map[string]string{"k8s-app": kubeDNSLabel}, []corev1.ContainerPort{
		{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
		{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
	})
	pod.Namespace = metav1.NamespaceSystem
	pod.Spec.HostNetwork = true
	pod.Spec.Containers[0].Image = "coredns (hack/coredns-assets.sh)"
	return pod
}

// multiPortService has three named ports to one pod's three ports.
func multiPortService() *corev1.Service {
	svc := kit.MakeService("multi-port-service", metav1.NamespaceDefault).Selector(map[string]string{"app": "multi"})
	for _, p := range multiPortPorts {
		svc.Port(corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: intstr.FromString(p.name), Protocol: corev1.ProtocolTCP})
	}
	return svc.Obj()
}

func multiPortPod() *corev1.Pod {
	var ports []corev1.ContainerPort
	for _, p := range multiPortPorts {
		ports = append(ports, corev1.ContainerPort{Name: p.name, ContainerPort: p.targetPort})
	}
	return demoPod(multiPortPodName, map[string]string{"app": "multi"}, ports)
}

// frontendService is the seeds' frontend: port 80 to a pod whose server calls backend-service.
func frontendService() *corev1.Service {
	return simpleService(metav1.NamespaceDefault, "frontend-service", "frontend").Obj()
}

func frontendPod() *corev1.Pod {
	pod := demoPod(frontendPodName, map[string]string{"app": "frontend"}, []corev1.ContainerPort{{Name: "http", ContainerPort: backendPort}})
	pod.Spec.Containers[0].Args = []string{proxyArg + "http://backend-service:80"}
	return pod
}

// headlessService selects the backend pods without a ClusterIP: its name resolves to their IPs.
func headlessService() *corev1.Service {
	return simpleService(metav1.NamespaceDefault, "headless-service", backendLabel).Headless().Obj()
}

// inventoryService lives in another namespace: reachable by its FQDN, not by its short name.
func inventoryService() *corev1.Service {
	return simpleService(otherNamespace, "inventory-service", "inventory").Obj()
}

func inventoryPod() *corev1.Pod {
	pod := demoPod(inventoryPodName, map[string]string{"app": "inventory"}, []corev1.ContainerPort{{Name: "http", ContainerPort: backendPort}})
	pod.Namespace = otherNamespace
	return pod
}

// simpleService is port 80 (http) to the pods' 8080 over the pods labelled app.
func simpleService(namespace, name, app string) *kit.ServiceWrapper {
	return kit.MakeService(name, namespace).Selector(map[string]string{"app": app}).TCPPort("http", 80, backendPort)
}
