package main

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// kubelet plays the kubelet of the demo node, only as far as Services care: for each Pod bound
// to the node it creates a network namespace with an address from the node's pod CIDR, serves
// HTTP on the Pod's container ports answering with the Pod's name, and reports the Pod Running
// and Ready with its podIP. A deleted Pod loses its namespace.
type kubelet struct {
	client kubernetes.Interface

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by namespace/name
	octets    map[string]int      // by namespace/name: the last octet of the pod's 10.244.0.x
}

func newKubelet(client kubernetes.Interface) *kubelet {
	return &kubelet{client: client, sandboxes: map[string]*sandbox{}, octets: map[string]int{}}
}

// registerNode creates the Node object, as a kubelet does when it joins the cluster; the
// endpoints controllers wait for a Pod's Node before they publish its address.
func (k *kubelet) registerNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.0.0/24", PodCIDRs: []string{"10.244.0.0/24"}},
	}
	created, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("register node %s: %w", nodeName, err)
	}
	created.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: uplinkNodeIP}, {Type: corev1.NodeHostName, Address: nodeName}},
	}
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

// run watches the node's Pods until ctx ends.
func (k *kubelet) run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + nodeName }))
	pods := factory.Core().V1().Pods().Informer()
	_, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if err := k.startPod(ctx, obj.(*corev1.Pod)); err != nil {
				fmt.Printf("    kubelet: %v\n", err)
			}
		},
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				k.stopPod(pod)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return nil
}

// startPod gives the Pod its network and servers, then reports it Running and Ready.
func (k *kubelet) startPod(ctx context.Context, pod *corev1.Pod) error {
	key := pod.Namespace + "/" + pod.Name
	octet, err := k.claimOctet(key)
	if err != nil {
		return err
	}
	ip := fmt.Sprintf("10.244.0.%d", octet)
	name := pod.Name
	if pod.Namespace != metav1.NamespaceDefault {
		name = pod.Namespace + "_" + pod.Name
	}
	sb, err := newSandbox(name, ip, podGateway, fmt.Sprintf("veth%d", octet))
	if err != nil {
		k.releaseOctet(key)
		return fmt.Errorf("pod %s: %w", key, err)
	}
	k.mu.Lock()
	k.sandboxes[key] = sb
	k.mu.Unlock()
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == corev1.ProtocolTCP || p.Protocol == "" {
				if err := sb.serveHTTP(int(p.ContainerPort), pod.Name); err != nil {
					return err
				}
			}
		}
	}
	return k.reportStatus(ctx, pod, ip)
}

func (k *kubelet) reportStatus(ctx context.Context, pod *corev1.Pod, ip string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		current.Status.Phase = corev1.PodRunning
		current.Status.HostIP, current.Status.HostIPs = uplinkNodeIP, []corev1.HostIP{{IP: uplinkNodeIP}}
		current.Status.PodIP, current.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		current.Status.StartTime = &now
		current.Status.Conditions = podConditions(true)
		current.Status.ContainerStatuses = nil
		for _, c := range current.Spec.Containers {
			current.Status.ContainerStatuses = append(current.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, Ready: true, Started: new(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		_, err = k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
}

// podConditions are a started Pod's conditions; ready false is what a failing readiness probe
// reports.
func podConditions(ready bool) []corev1.PodCondition {
	now := metav1.Now()
	readiness, reason := corev1.ConditionTrue, ""
	if !ready {
		readiness, reason = corev1.ConditionFalse, "ContainersNotReady"
	}
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: readiness, Reason: reason, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: readiness, Reason: reason, LastTransitionTime: now},
	}
}

func (k *kubelet) stopPod(pod *corev1.Pod) {
	key := pod.Namespace + "/" + pod.Name
	k.mu.Lock()
	sb := k.sandboxes[key]
	delete(k.sandboxes, key)
	k.mu.Unlock()
	if sb != nil {
		sb.destroy()
	}
	k.releaseOctet(key)
}

// sandbox returns the network namespace of a started Pod, or nil.
func (k *kubelet) sandbox(namespace, name string) *sandbox {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sandboxes[namespace+"/"+name]
}

// stopAll tears down every Pod's namespace (the kernel would too, but this keeps `ip netns`
// honest while the demo is still running).
func (k *kubelet) stopAll() {
	k.mu.Lock()
	all := k.sandboxes
	k.sandboxes = map[string]*sandbox{}
	k.mu.Unlock()
	for _, sb := range all {
		sb.destroy()
	}
}

// claimOctet picks the lowest free address of the node's pod CIDR (from .10: the node holds .1).
func (k *kubelet) claimOctet(key string) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	used := map[int]bool{}
	for _, octet := range k.octets {
		used[octet] = true
	}
	for octet := 10; octet < 255; octet++ {
		if !used[octet] {
			k.octets[key] = octet
			return octet, nil
		}
	}
	return 0, fmt.Errorf("pod %s: the node's pod CIDR 10.244.0.0/24 is full", key)
}

func (k *kubelet) releaseOctet(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.octets, key)
}
