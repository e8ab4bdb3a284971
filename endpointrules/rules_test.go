package endpointrules

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func pod(labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "backend-0", Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.10"},
	}
}

func service(selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "backend"},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: ports}}
}

func TestSelects(t *testing.T) {
	backend := map[string]string{"app": "backend"}
	tests := []struct {
		name         string
		selector     map[string]string
		podNamespace string
		want         bool
		wantSelector bool
	}{
		{name: "matching labels", selector: backend, want: true, wantSelector: true},
		{name: "other labels", selector: map[string]string{"app": "frontend"}, want: false, wantSelector: true},
		{name: "same labels in another namespace", selector: backend, podNamespace: "other", want: false, wantSelector: true},
		{name: "a nil selector picks no pod: the endpoints are the user's", selector: nil, want: false, wantSelector: false},
		{name: "a non-nil empty selector (not round-tripped through the API server) picks every pod", selector: map[string]string{}, want: true, wantSelector: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(tt.selector)
			p := pod(backend)
			if tt.podNamespace != "" {
				p.Namespace = tt.podNamespace
			}
			if got := Selects(svc, p); got != tt.want {
				t.Errorf("Selects = %t, want %t", got, tt.want)
			}
			if got := HasSelector(svc); got != tt.wantSelector {
				t.Errorf("HasSelector = %t, want %t", got, tt.wantSelector)
			}
			if got := len(SelectedPods(svc, []*corev1.Pod{p})) == 1; got != tt.want {
				t.Errorf("SelectedPods picks the pod: %t, want %t", got, tt.want)
			}
		})
	}
}

func TestFindPort(t *testing.T) {
	http := corev1.ContainerPort{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}
	httpUndefaulted := corev1.ContainerPort{Name: "http", ContainerPort: 8080}
	dns := corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP}
	sidecar := corev1.Container{Name: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 15001, Protocol: corev1.ProtocolTCP}}}
	plainInit := corev1.Container{Name: "setup", Ports: []corev1.ContainerPort{{Name: "setup", ContainerPort: 9999, Protocol: corev1.ProtocolTCP}}}
	tests := []struct {
		name    string
		port    corev1.ServicePort
		ports   []corev1.ContainerPort
		init    []corev1.Container
		want    int32
		wantErr bool
	}{
		{name: "a number as is", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}, want: 8080},
		{name: "a number no container declares still resolves", port: corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(9090)}, ports: []corev1.ContainerPort{http}, want: 9090},
		{name: "targetPort 0 (not defaulted) is the port", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}, want: 80},
		{name: `targetPort "" (not defaulted) is the port`, port: corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("")}, want: 80},
		{name: "a name against the containers' ports", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}, ports: []corev1.ContainerPort{dns, http}, want: 8080},
		{name: "an empty Service protocol is TCP", port: corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}, ports: []corev1.ContainerPort{http}, want: 8080},
		{name: "an empty container protocol is TCP", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}, ports: []corev1.ContainerPort{httpUndefaulted}, want: 8080},
		{name: "both protocols empty", port: corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}, ports: []corev1.ContainerPort{httpUndefaulted}, want: 8080},
		{name: "a name of another protocol does not resolve", port: corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("dns")}, ports: []corev1.ContainerPort{dns}, wantErr: true},
		{name: "an unknown name does not resolve", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("web")}, ports: []corev1.ContainerPort{http}, wantErr: true},
		{name: "a sidecar's named port resolves", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("proxy")}, init: []corev1.Container{sidecar}, want: 15001},
		{name: "a plain init container's does not", port: corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("setup")}, init: []corev1.Container{plainInit}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pod(nil, tt.ports...)
			p.Spec.InitContainers = tt.init
			got, err := FindPort(p, &tt.port)
			if (err != nil) != tt.wantErr {
				t.Fatalf("FindPort error = %v, want error %t", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("FindPort = %d, want %d", got, tt.want)
			}
			svc := service(map[string]string{}, tt.port)
			if served := ServesAnyPort(svc, p); served == tt.wantErr {
				t.Errorf("ServesAnyPort = %t, want %t", served, !tt.wantErr)
			}
		})
	}
}

func TestExpectedEndpoints(t *testing.T) {
	backend := map[string]string{"app": "backend"}
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	with := func(edit func(*corev1.Pod)) *corev1.Pod {
		p := pod(backend, corev1.ContainerPort{Name: "http", ContainerPort: 8080})
		p.Status.Conditions = ready
		edit(p)
		return p
	}
	deleted := &metav1.Time{Time: time.Unix(1, 0)}
	named := corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}
	tests := []struct {
		name              string
		svc               *corev1.Service
		pod               *corev1.Pod
		families          []corev1.IPFamily
		want              map[string]PublishedPod
		publishNotReady   bool
		wantServesAnyPort bool
	}{
		{name: "a ready pod", svc: service(backend, named), pod: with(func(*corev1.Pod) {}),
			want: map[string]PublishedPod{"10.244.1.10": {Conditions: Conditions{Ready: true, Serving: true}, ServesAnyPort: true}}},
		{name: "a not-ready pod is published not ready", svc: service(backend, named), pod: with(func(p *corev1.Pod) { p.Status.Conditions = nil }),
			want: map[string]PublishedPod{"10.244.1.10": {ServesAnyPort: true}}},
		{name: "publishNotReadyAddresses makes it ready", svc: service(backend, named), publishNotReady: true, pod: with(func(p *corev1.Pod) { p.Status.Conditions = nil }),
			want: map[string]PublishedPod{"10.244.1.10": {Conditions: Conditions{Ready: true}, ServesAnyPort: true}}},
		{name: "a terminating ready pod is serving, terminating, not ready", svc: service(backend, named), pod: with(func(p *corev1.Pod) { p.DeletionTimestamp = deleted }),
			want: map[string]PublishedPod{"10.244.1.10": {Conditions: Conditions{Serving: true, Terminating: true}, ServesAnyPort: true}}},
		{name: "a finished pod is not published", svc: service(backend, named), pod: with(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), want: map[string]PublishedPod{}},
		{name: "a pod without IP is not published", svc: service(backend, named), pod: with(func(p *corev1.Pod) { p.Status.PodIP = "" }), want: map[string]PublishedPod{}},
		{name: "a pod the selector does not pick", svc: service(map[string]string{"app": "web"}, named), pod: with(func(*corev1.Pod) {}), want: map[string]PublishedPod{}},
		{name: "a pod on which no port resolves is published without ports", svc: service(backend, corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("web")}), pod: with(func(*corev1.Pod) {}),
			want: map[string]PublishedPod{"10.244.1.10": {Conditions: Conditions{Ready: true, Serving: true}}}},
		{name: "dual-stack pod, IPv6 family only", svc: service(backend, named), families: []corev1.IPFamily{corev1.IPv6Protocol},
			pod: with(func(p *corev1.Pod) {
				p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.10"}, {IP: "fd00::0a"}}
			}),
			want: map[string]PublishedPod{"fd00::a": {Conditions: Conditions{Ready: true, Serving: true}, ServesAnyPort: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.svc.Spec.PublishNotReadyAddresses = tt.publishNotReady
			got := ExpectedEndpoints(tt.svc, []*corev1.Pod{tt.pod}, tt.families)
			if len(got) != len(tt.want) {
				t.Fatalf("ExpectedEndpoints = %v, want %v", got, tt.want)
			}
			for ip, want := range tt.want {
				g, ok := got[ip]
				if !ok || g.Pod != tt.pod || g.Conditions != want.Conditions || g.ServesAnyPort != want.ServesAnyPort {
					t.Errorf("ExpectedEndpoints[%s] = %+v (present %t), want %+v", ip, g, ok, want)
				}
			}
		})
	}
}
