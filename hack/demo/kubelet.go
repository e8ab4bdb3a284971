package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// kubelet plays the kubelet of the demo node, only as far as Services care: for each Pod bound
// to the node it creates a network namespace with an address from the node's pod CIDR, serves
// HTTP on the Pod's container ports answering with the Pod's name, and reports the Pod Running
// and Ready with its podIP. A deleted Pod loses its namespace.
//
// Like kubelet, it gives each pod the cluster DNS in a resolv.conf (search path of the pod's
// namespace, ndots:5) and the Service environment variables of the Services that exist when the
// pod starts; processes of the pod (podProcess) see both. A container with the argument
// --proxy-to=URL runs as such a process. A hostNetwork pod gets no namespace: its address is the
// node's, and its process is the demo's business (CoreDNS).
type kubelet struct {
	client  kubernetes.Interface
	workDir string // holds each pod's resolv.conf

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by namespace/name
	octets    map[string]int      // by namespace/name: the last octet of the pod's 10.244.0.x
}

func newKubelet(client kubernetes.Interface, workDir string) *kubelet {
	return &kubelet{client: client, workDir: workDir, sandboxes: map[string]*sandbox{}, octets: map[string]int{}}
}

// registerNode creates the Node object, as a kubelet does when it joins the cluster; the
// endpoints controllers wait for a Pod's Node before they publish its address.
func (k *kubelet) registerNode(ctx context.Context) error {
	node := kit.MakeNode(nodeName).Label(corev1.LabelHostname, nodeName).PodCIDRs("10.244.0.0/24").Obj()
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
	if pod.Spec.HostNetwork {
		return k.reportStatus(ctx, pod, uplinkNodeIP)
	}
	key := pod.Namespace + "/" + pod.Name
	octet, err := k.claimOctet(key)
	if err != nil {
		return err
	}
	ip := fmt.Sprintf("10.244.0.%d", octet)
	sb, err := newSandbox(sandboxName(pod), ip, podGateway, fmt.Sprintf("veth%d", octet))
	if err != nil {
		k.releaseOctet(key)
		return fmt.Errorf("pod %s: %w", key, err)
	}
	k.mu.Lock()
	k.sandboxes[key] = sb
	k.mu.Unlock()
	if err := k.setUpNames(ctx, pod, sb); err != nil {
		return fmt.Errorf("pod %s: %w", key, err)
	}
	if err := k.startContainers(pod, sb); err != nil {
		return fmt.Errorf("pod %s: %w", key, err)
	}
	return k.reportStatus(ctx, pod, ip)
}

// startContainers serves HTTP on each TCP container port, answering with the pod's name (and
// the port, when the pod has several), or runs a --proxy-to container as a process of the pod.
func (k *kubelet) startContainers(pod *corev1.Pod, sb *sandbox) error {
	for _, c := range pod.Spec.Containers {
		var tcpPorts []int
		for _, p := range c.Ports {
			if p.Protocol == corev1.ProtocolTCP || p.Protocol == "" {
				tcpPorts = append(tcpPorts, int(p.ContainerPort))
			}
		}
		for _, port := range tcpPorts {
			answer := pod.Name
			if len(tcpPorts) > 1 {
				answer = fmt.Sprintf("%s (port %d)", pod.Name, port)
			}
			if proxyTo, ok := proxyTarget(c); ok {
				if err := sb.runServer(podProcess{Serve: port, Answer: answer, ProxyTo: proxyTo}); err != nil {
					return err
				}
				continue
			}
			if err := sb.serveHTTP(port, answer); err != nil {
				return err
			}
		}
	}
	return nil
}

// proxyTarget is the URL of a container's --proxy-to argument.
func proxyTarget(c corev1.Container) (string, bool) {
	for _, arg := range c.Args {
		if target, ok := strings.CutPrefix(arg, proxyArg); ok {
			return target, true
		}
	}
	return "", false
}

// setUpNames writes the pod's resolv.conf and computes its Service variables, from the Services
// that exist now.
func (k *kubelet) setUpNames(ctx context.Context, pod *corev1.Pod, sb *sandbox) error {
	services, err := k.client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services for the pod's environment: %w", err)
	}
	var all []*corev1.Service
	for i := range services.Items {
		all = append(all, &services.Items[i])
	}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	for _, v := range diagnose.PodServiceEnvVars(pod.Namespace, links, all) {
		sb.env = append(sb.env, v.Name+"="+v.Value)
	}
	sb.env = append(sb.env, "HOSTNAME="+pod.Name)
	dir := filepath.Join(k.workDir, "pods", pod.Namespace+"_"+pod.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sb.resolvConf = filepath.Join(dir, "resolv.conf")
	return os.WriteFile(sb.resolvConf, []byte(resolvConf(pod.Namespace)), 0o644)
}

// resolvConf is what kubelet writes for a pod with dnsPolicy ClusterFirst.
func resolvConf(namespace string) string {
	return fmt.Sprintf("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n",
		clusterDNSIP, namespace, clusterDomain, clusterDomain, clusterDomain)
}

// sandboxName names a pod's network namespace: its name, prefixed by its namespace outside default.
func sandboxName(pod *corev1.Pod) string {
	if pod.Namespace != metav1.NamespaceDefault {
		return pod.Namespace + "_" + pod.Name
	}
	return pod.Name
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
	if pod.Spec.HostNetwork {
		return
	}
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
