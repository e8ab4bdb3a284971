package diagnose

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

// wantFinding is a finding expected in a report: severity, check and a part of the message.
type wantFinding struct {
	severity Severity
	check    string
	contains string
}

func TestDiagnose(t *testing.T) {
	svc := backendService()
	ready0 := testPod("backend-0", "10.244.1.10", backendLabels, true, kit.TCPContainerPort("http", 8080))
	ready1 := testPod("backend-1", "10.244.1.11", backendLabels, true, kit.TCPContainerPort("http", 8080))
	notReady := testPod("backend-2", "10.244.1.12", backendLabels, false, kit.TCPContainerPort("http", 8080))
	terminating := testPod("backend-3", "10.244.1.13", backendLabels, true, kit.TCPContainerPort("http", 8080))
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	pools := []*ipamv1alpha1.ClusterIPPool{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: ipamv1alpha1.ClusterIPPoolSpec{CIDRs: []string{"10.96.0.0/12"}}}}
	healthySlice := sliceFor(svc, "endpointslice-controller.clusterip.dev", 8080, readyEP("10.244.1.10"), readyEP("10.244.1.11"))
	selectorless := backendService(func(s *corev1.Service) { s.Spec.Selector = nil })

	tests := []struct {
		name        string
		in          Inputs
		wantVerdict Verdict
		want        []wantFinding
		notWant     []wantFinding
	}{
		{
			name: "healthy Service: pool, pods, ports, Endpoints and slices all OK",
			in: Inputs{Service: svc, Pods: []*corev1.Pod{ready0, ready1}, Pools: pools,
				Endpoints: endpointsFor(svc, []string{"10.244.1.10", "10.244.1.11"}, nil, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{healthySlice}},
			wantVerdict: VerdictHealthy,
			want: []wantFinding{
				{OK, CheckPool, "ClusterIP 10.96.0.10 is in ClusterIPPool default"},
				{OK, CheckSelector, "matches 2 pod(s) in namespace shop: backend-0, backend-1"},
				{OK, CheckReadiness, "2 ready pod(s)"},
				{OK, CheckPorts, "targetPort 8080 is declared"},
				{OK, CheckEndpoints, "list 2 ready and 0 not-ready"},
				{OK, CheckEndpointSlices, "2 endpoint(s): 2 ready"},
			},
		},
		{
			name: "slices of two controllers: a warning naming both",
			in: Inputs{Service: svc, Pods: []*corev1.Pod{ready0, ready1}, Pools: pools,
				Endpoints: endpointsFor(svc, []string{"10.244.1.10", "10.244.1.11"}, nil, 8080),
				EndpointSlices: []*discoveryv1.EndpointSlice{healthySlice, func() *discoveryv1.EndpointSlice {
					s := sliceFor(svc, "endpointslice-controller.k8s.io", 8080, readyEP("10.244.1.10"))
					s.Name = "backend-upstream"
					return s
				}()}},
			wantVerdict: VerdictWarnings,
			want: []wantFinding{{Warning, CheckEndpointSlices,
				`come from more than one controller (backend-abcde by "endpointslice-controller.clusterip.dev"; backend-upstream by "endpointslice-controller.k8s.io")`}},
		},
		{
			name:        "ClusterIP outside every pool is a warning",
			in:          Inputs{Service: backendService(func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"10.0.0.10"} }), Pools: pools, Pods: []*corev1.Pod{ready0}, EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.1.10"))}, Endpoints: endpointsFor(svc, []string{"10.244.1.10"}, nil, 8080)},
			wantVerdict: VerdictWarnings,
			want:        []wantFinding{{Warning, CheckPool, "10.0.0.10 is in no ClusterIPPool"}},
		},
		{
			name:        "selector typo: the near miss is named",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{testPod("backend-0", "10.244.1.10", map[string]string{"app": "backnd"}, true)}, Endpoints: endpointsFor(svc, nil, nil, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080)}},
			wantVerdict: VerdictProblems,
			want:        []wantFinding{{Problem, CheckSelector, "closest: pod backend-0 has app=backnd (selector wants app=backend)"}},
		},
		{
			name:        "pods in another namespace: the namespace is named",
			in:          Inputs{Service: svc, PodsElsewhere: []*corev1.Pod{inNamespace(testPod("backend-0", "10.244.1.10", backendLabels, true), "shop-staging")}},
			wantVerdict: VerdictProblems,
			want: []wantFinding{
				{Problem, CheckSelector, "matches no pod in namespace shop"},
				{Problem, CheckSelector, "matches 1 pod(s) in namespace shop-staging instead: backend-0"},
			},
		},
		{
			name:        "some pods ready, one not: a warning naming the condition and container",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{ready0, notReady}, Endpoints: endpointsFor(svc, []string{"10.244.1.10"}, []string{"10.244.1.12"}, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.1.10"), notReadyEP("10.244.1.12"))}},
			wantVerdict: VerdictWarnings,
			want:        []wantFinding{{Warning, CheckReadiness, "pod backend-2 (10.244.1.12) is not ready: Ready=False (ContainersNotReady: containers with unready status: [app]); container app: running, readiness probe failing"}},
		},
		{
			name:        "no pod ready: a problem",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{notReady}, Endpoints: endpointsFor(svc, nil, []string{"10.244.1.12"}, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, notReadyEP("10.244.1.12"))}},
			wantVerdict: VerdictProblems,
			want: []wantFinding{
				{Problem, CheckReadiness, "pod backend-2 (10.244.1.12) is not ready"},
				{Problem, CheckReadiness, "none of the 1 selected pod(s) is ready"},
			},
		},
		{
			name: "a terminating pod is serving-terminating in the slices and absent from Endpoints",
			in: Inputs{Service: svc, Pods: []*corev1.Pod{ready0, terminating}, Endpoints: endpointsFor(svc, []string{"10.244.1.10"}, nil, 8080),
				EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.1.10"), sliceEP{ip: "10.244.1.13", serving: true, terminating: true})}},
			wantVerdict: VerdictWarnings,
			want: []wantFinding{
				{Warning, CheckReadiness, "pod backend-3 is terminating"},
				{OK, CheckEndpoints, "1 ready and 0 not-ready"},
				{OK, CheckEndpointSlices, "1 ready, 1 serving while terminating"},
			},
		},
		{
			name:        "numeric targetPort no container declares: a warning",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{testPod("backend-0", "10.244.1.10", backendLabels, true, kit.TCPContainerPort("http", 80))}, Endpoints: endpointsFor(svc, []string{"10.244.1.10"}, nil, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.1.10"))}},
			wantVerdict: VerdictWarnings,
			want:        []wantFinding{{Warning, CheckPorts, "targetPort 8080/TCP is declared by no container of the selected pods (backend-0 declares http 80/TCP)"}},
		},
		{
			name: "named targetPort missing on some pods: a problem naming them",
			in: Inputs{Service: backendService(func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromString("http") }),
				Pods: []*corev1.Pod{ready0, testPod("backend-1", "10.244.1.11", backendLabels, true, kit.TCPContainerPort("web", 8080))}, Endpoints: endpointsFor(svc, []string{"10.244.1.10"}, nil, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.1.10"))}},
			wantVerdict: VerdictProblems,
			want:        []wantFinding{{Problem, CheckPorts, `targetPort "http" of port 80/TCP is declared by no container port of 1 of 2 selected pods: backend-1`}},
			notWant:     []wantFinding{{Problem, CheckEndpoints, ""}, {Problem, CheckEndpointSlices, ""}},
		},
		{
			name:        "Endpoints and slices missing: the endpoints controller is named",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{ready0}},
			wantVerdict: VerdictProblems,
			want:        []wantFinding{{Problem, CheckEndpoints, "no Endpoints and no EndpointSlices"}},
		},
		{
			name:        "stale Endpoints and slices: unknown address, missing pod",
			in:          Inputs{Service: svc, Pods: []*corev1.Pod{ready0}, Endpoints: endpointsFor(svc, []string{"10.244.9.9"}, nil, 8080), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(svc, "x", 8080, readyEP("10.244.9.9"))}},
			wantVerdict: VerdictProblems,
			want: []wantFinding{
				{Problem, CheckEndpoints, "lists 10.244.9.9 that no selected pod has; misses pod backend-0 (10.244.1.10)"},
				{Problem, CheckEndpointSlices, "backend-abcde lists 10.244.9.9 that no selected pod has; no slice lists pod backend-0 (10.244.1.10)"},
			},
		},
		{
			name: "truncated Endpoints: a warning pointing at the slices, missing addresses are not a problem",
			in: Inputs{Service: svc, Pods: []*corev1.Pod{ready0, ready1},
				Endpoints: func() *corev1.Endpoints {
					ep := endpointsFor(svc, []string{"10.244.1.10"}, nil, 8080)
					ep.Annotations = map[string]string{corev1.EndpointsOverCapacity: "truncated"}
					return ep
				}(), EndpointSlices: []*discoveryv1.EndpointSlice{healthySlice}},
			wantVerdict: VerdictWarnings,
			want:        []wantFinding{{Warning, CheckEndpoints, "are truncated (endpoints.kubernetes.io/over-capacity=truncated): they list 1 addresses"}},
		},
		{
			name:        "selectorless without Endpoints: nothing receives traffic",
			in:          Inputs{Service: selectorless},
			wantVerdict: VerdictProblems,
			want:        []wantFinding{{Problem, CheckEndpoints, "no selector and no Endpoints object backend exists"}},
		},
		{
			name:        "selectorless with Endpoints mirrored",
			in:          Inputs{Service: selectorless, Endpoints: endpointsFor(selectorless, []string{"192.0.2.10"}, nil, 5432), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(selectorless, endpointrules.MirroringControllerName, 5432, readyEP("192.0.2.10"))}},
			wantVerdict: VerdictHealthy,
			want: []wantFinding{
				{OK, CheckEndpoints, "its Endpoints backend list 1 ready address(es): 192.0.2.10"},
				{OK, CheckEndpointSlices, "mirrored into EndpointSlice(s) backend-abcde (managed by endpointslicemirroring-controller.clusterip.dev)"},
			},
		},
		{
			name:        "selectorless with Endpoints mirrored by upstream's controller",
			in:          Inputs{Service: selectorless, Endpoints: endpointsFor(selectorless, []string{"192.0.2.10"}, nil, 5432), EndpointSlices: []*discoveryv1.EndpointSlice{sliceFor(selectorless, endpointrules.UpstreamMirroringControllerName, 5432, readyEP("192.0.2.10"))}},
			wantVerdict: VerdictHealthy,
		},
		{
			name:        "selectorless with Endpoints not mirrored",
			in:          Inputs{Service: selectorless, Endpoints: endpointsFor(selectorless, []string{"192.0.2.10"}, nil, 5432)},
			wantVerdict: VerdictProblems,
			want:        []wantFinding{{Problem, CheckEndpointSlices, "Endpoints backend are not mirrored"}},
		},
		{
			name: "ExternalName: nothing else to check",
			in: Inputs{Service: backendService(func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example.com", "", nil
			})},
			wantVerdict: VerdictHealthy,
			want:        []wantFinding{{OK, CheckService, "CNAME to db.example.com"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			report := Diagnose(tt.in)
			if report.Verdict != tt.wantVerdict {
				t.Errorf("verdict %s, want %s; findings:\n%s", report.Verdict, tt.wantVerdict, dump(report))
			}
			for _, w := range tt.want {
				if !hasFinding(report, w) {
					t.Errorf("no %s %s finding containing %q; findings:\n%s", w.severity, w.check, w.contains, dump(report))
				}
			}
			for _, w := range tt.notWant {
				if hasFinding(report, w) {
					t.Errorf("unexpected %s %s finding containing %q; findings:\n%s", w.severity, w.check, w.contains, dump(report))
				}
			}
		})
	}
}

func hasFinding(r *Report, w wantFinding) bool {
	for _, f := range r.Findings {
		if f.Severity == w.severity && f.Check == w.check && strings.Contains(f.Message, w.contains) {
			return true
		}
	}
	return false
}

func dump(r *Report) string {
	var b strings.Builder
	_ = WriteText(&b, r)
	return b.String()
}

func TestServiceNotFound(t *testing.T) {
	tests := []struct {
		name              string
		namespaceExists   bool
		sameNameElsewhere []string
		wantFix           string
	}{
		{name: "nowhere", namespaceExists: true, wantFix: "check the name and namespace (kubectl get services -n shop), or create the Service"},
		{name: "in another namespace", namespaceExists: true, sameNameElsewhere: []string{"shop-staging"}, wantFix: "pass -n shop-staging"},
		{name: "the namespace does not exist", sameNameElsewhere: []string{"shop-staging"}, wantFix: "namespace shop does not exist: check -n (or the kubeconfig context's namespace); a Service backend exists in namespace(s) shop-staging"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			report := ServiceNotFound("shop", "backend", tt.namespaceExists, tt.sameNameElsewhere)
			if report.ExitCode() != ExitProblem || !strings.Contains(report.Findings[0].Fix, tt.wantFix) {
				t.Errorf("want a problem whose fix contains %q; report:\n%s", tt.wantFix, dump(report))
			}
		})
	}
}
