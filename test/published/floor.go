package published

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// FloorWriter is the floor of the endpoints benchmarks: the least any controller can do on the
// same API server. Before the clock starts it computes, from the Workload's fixtures, the
// Endpoints and the EndpointSlice of every Service (the same objects a controller publishes,
// down to the trigger-time annotation and the slice names the API server generates); when
// started it creates them all, and then answers each pod event with one precomputed write per
// object and no read. What a controller takes beyond it is its own cost.
type FloorWriter struct {
	// Client writes; give it the client QPS the controllers under comparison get.
	Client client.WithWatch
	// ReadPods makes Start read every pod of the Workload before the first write, streamed as
	// client-go's informers read them (a watch that begins with the current pods), keeping
	// nothing of them: the least that any controller computing endpoints from pods does before
	// it can publish, which the plain floor skips.
	ReadPods bool

	services map[string]*floorService // by Service name
	podIP    map[string]string        // pod name → IP
	podsRV   string                   // where the pod watch starts: no initial events
	started  chan struct{}
}

// ComparedClientConfig is a copy of cfg as every client under comparison reads and writes: at
// qps (burst twice that) and without gzip, as kube-controller-manager and our manager ask.
func ComparedClientConfig(cfg *rest.Config, qps int) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(qps), 2*qps
	cfg.DisableCompression = true
	return cfg
}

// NewFloorWriter returns a FloorWriter on the API server of cfg whose client reads and writes as
// the controllers under comparison do (ComparedClientConfig).
func NewFloorWriter(cfg *rest.Config, qps int, readPods bool) (*FloorWriter, error) {
	c, err := client.NewWithWatch(ComparedClientConfig(cfg, qps), client.Options{Scheme: scheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("the floor writer's client: %w", err)
	}
	return &FloorWriter{Client: c, ReadPods: readPods}, nil
}

// floorService holds one Service's published objects as last written (their resourceVersion
// lets the next update go through without a read).
type floorService struct {
	mu        sync.Mutex
	endpoints *corev1.Endpoints
	slice     *discoveryv1.EndpointSlice
}

// Prepare computes the objects to publish from the Workload's pods and Services; call it from
// Workload.BeforeStart (untimed).
func (f *FloorWriter) Prepare(ctx context.Context, pods []*corev1.Pod) error {
	var services corev1.ServiceList
	if err := f.Client.List(ctx, &services, client.InNamespace(workloadNamespace)); err != nil {
		return err
	}
	bySelector := map[string][]*corev1.Pod{}
	f.podIP = map[string]string{}
	for _, p := range pods {
		bySelector[p.Labels["svc"]] = append(bySelector[p.Labels["svc"]], p)
		f.podIP[p.Name] = p.Status.PodIP
	}
	f.services = map[string]*floorService{}
	for i := range services.Items {
		svc := &services.Items[i]
		f.services[svc.Name] = &floorService{
			endpoints: floorEndpoints(svc, bySelector[svc.Name]),
			slice:     floorSlice(svc, bySelector[svc.Name]),
		}
	}
	// Only the changes from now on: replaying every pod would cost the API server more than the
	// writes being measured.
	podsRV, err := resourceVersionNow(ctx, f.Client, &corev1.PodList{}, workloadNamespace)
	if err != nil {
		return err
	}
	f.podsRV = podsRV
	f.started = make(chan struct{})
	return nil
}

// Start begins the timed part: it watches pods, creates every object, and returns; pod events
// are answered until ctx ends.
func (f *FloorWriter) Start(ctx context.Context) error {
	// Like the Observer's, this watch goes on where it left off if the API server ends it.
	w, err := followFrom(ctx, f.Client, &corev1.PodList{}, workloadNamespace, f.podsRV, func() {})
	if err != nil {
		return err
	}
	if f.ReadPods {
		if err := f.readPods(ctx); err != nil {
			w.Stop()
			return err
		}
	}
	go f.follow(ctx, w)
	names := make([]string, 0, len(f.services))
	for name := range f.services {
		names = append(names, name)
	}
	go func() {
		defer close(f.started)
		err := Parallel(len(names), func(i int) error {
			s := f.services[names[i]]
			s.mu.Lock()
			defer s.mu.Unlock()
			return parallel2(
				func() error { return f.Client.Create(ctx, s.endpoints) },
				func() error { return f.Client.Create(ctx, s.slice) })
		})
		if err != nil && ctx.Err() == nil {
			fmt.Printf("floor writer: create: %v\n", err)
		}
	}()
	return nil
}

// readPods streams the Workload's pods up to the bookmark that ends the initial ones.
func (f *FloorWriter) readPods(ctx context.Context) error {
	opts := metav1.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan}
	w, err := f.Client.Watch(ctx, &corev1.PodList{}, client.InNamespace(workloadNamespace), &client.ListOptions{Raw: &opts})
	if err != nil {
		return fmt.Errorf("read pods: %w", err)
	}
	defer w.Stop()
	pods := 0
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added:
			pods++
		case watch.Bookmark:
			if bookmark, ok := ev.Object.(*corev1.Pod); ok && bookmark.Annotations[metav1.InitialEventsAnnotationKey] == "true" {
				return nil
			}
		case watch.Error:
			return fmt.Errorf("read pods: %w", apierrors.FromObject(ev.Object))
		}
	}
	return fmt.Errorf("read pods: the stream ended after %d pods, before the end of the initial ones", pods)
}

// follow answers each pod readiness change with one update of the Service's Endpoints and one
// of its slice, both written from memory.
func (f *FloorWriter) follow(ctx context.Context, w watch.Interface) {
	defer w.Stop()
	select {
	case <-f.started:
	case <-ctx.Done():
		return
	}
	for ev := range w.ResultChan() {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type != watch.Modified {
			continue
		}
		s := f.services[pod.Labels["svc"]]
		if s == nil {
			continue
		}
		go f.publish(ctx, s, f.podIP[pod.Name], endpointrules.IsPodReady(pod))
	}
}

func (f *FloorWriter) publish(ctx context.Context, s *floorService, ip string, ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !setFloorReadiness(s, ip, ready) {
		return
	}
	err := parallel2(
		func() error { return f.Client.Update(ctx, s.endpoints) },
		func() error { return f.Client.Update(ctx, s.slice) })
	if err != nil && ctx.Err() == nil {
		fmt.Printf("floor writer: update: %v\n", err)
	}
}

// setFloorReadiness moves ip between ready and not-ready in both objects; false if nothing
// changed (a status write that did not flip readiness).
func setFloorReadiness(s *floorService, ip string, ready bool) bool {
	changed := false
	for i := range s.slice.Endpoints {
		e := &s.slice.Endpoints[i]
		if e.Addresses[0] == ip && ptr.Deref(e.Conditions.Ready, false) != ready {
			e.Conditions.Ready, e.Conditions.Serving = ptr.To(ready), ptr.To(ready)
			changed = true
		}
	}
	if !changed {
		return false
	}
	subset := &s.endpoints.Subsets[0]
	from, to := &subset.NotReadyAddresses, &subset.Addresses
	if !ready {
		from, to = to, from
	}
	for i, a := range *from {
		if a.IP == ip {
			*to = append(*to, a)
			*from = append((*from)[:i], (*from)[i+1:]...)
			break
		}
	}
	return true
}

func parallel2(a, b func() error) error {
	errs := make(chan error, 1)
	go func() { errs <- a() }()
	errB := b()
	if errA := <-errs; errA != nil {
		return errA
	}
	return errB
}

func floorEndpoints(svc *corev1.Service, pods []*corev1.Pod) *corev1.Endpoints {
	subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}}
	for _, p := range pods {
		subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: p.Status.PodIP, NodeName: ptr.To(p.Spec.NodeName),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}})
	}
	return &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace,
			Labels:      map[string]string{endpointrules.LabelEndpointsManagedBy: endpointrules.EndpointsControllerName},
			Annotations: triggerTimeAnnotation(svc)},
		Subsets: []corev1.EndpointSubset{subset},
	}
}

func floorSlice(svc *corev1.Service, pods []*corev1.Pod) *discoveryv1.EndpointSlice {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{GenerateName: svc.Name + "-", Namespace: svc.Namespace,
			Labels:          map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: endpointrules.SliceControllerName},
			Annotations:     triggerTimeAnnotation(svc),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, p := range pods {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(p.Spec.NodeName),
			Zone:       ptr.To(nodeZones[p.Spec.NodeName]),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	return slice
}

// triggerTimeAnnotation is the trigger-time annotation both upstream and ours put on the objects
// they publish; its value is the Service's creation, which is as long as any other.
func triggerTimeAnnotation(svc *corev1.Service) map[string]string {
	return map[string]string{corev1.EndpointsLastChangeTriggerTime: svc.CreationTimestamp.UTC().Format(time.RFC3339Nano)}
}
