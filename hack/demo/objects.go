package main

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend-service", Namespace: metav1.NamespaceDefault},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": backendLabel},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(backendPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// stickyService selects the same pods with ClientIP affinity: a client keeps its pod.
func stickyService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "sticky-service", Namespace: metav1.NamespaceDefault},
		Spec: corev1.ServiceSpec{
			Selector:              map[string]string{"app": backendLabel},
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: new(int32(3600))}},
			Ports:                 []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(backendPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// externalDatabaseService has no selector: its Endpoints are written by the user and mirrored
// into an EndpointSlice.
func externalDatabaseService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "external-database", Namespace: metav1.NamespaceDefault},
		Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Port: databasePort, TargetPort: intstr.FromInt32(databasePort), Protocol: corev1.ProtocolTCP}},
		},
	}
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
