package endpoints

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestPodCacheTransformKeepsWhatEndpointsNeed(t *testing.T) {
	svc := service(withPorts(svcPort("http", 80, intstr.FromString("http"), corev1.ProtocolTCP)), headless)
	full := podWith(pod("a", "10.0.0.1"), hostnameSubdomain("a", "web"), terminating, func(p *corev1.Pod) {
		p.Annotations = map[string]string{"big": "annotation"}
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
		p.Spec.Containers[0].Image = "registry.k8s.io/pause:3.10"
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "b"}}
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue})
	})
	in := full.DeepCopy()
	out, err := PodCacheTransform(in)
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*corev1.Pod)
	if slim != in {
		t.Errorf("transform made a new pod; it trims the informer's own in place")
	}
	// An informer that streams its initial list transforms each pod twice.
	again, err := PodCacheTransform(slim.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(again, slim) {
		t.Errorf("transforming a trimmed pod changed it:\n%+v\n%+v", again, slim)
	}
	if slim.Annotations != nil || slim.ManagedFields != nil || slim.Spec.Containers[0].Image != "" || slim.Spec.Containers[0].Env != nil {
		t.Errorf("transform kept fields endpoints do not need: %+v", slim)
	}
	if len(slim.Status.Conditions) != 1 {
		t.Errorf("conditions = %+v, want Ready only", slim.Status.Conditions)
	}
	wantSubsets := renderSubsets(EndpointSubsets(svc, pods(full)))
	gotSubsets := renderSubsets(EndpointSubsets(svc, pods(slim)))
	wantGroups, _ := DesiredEndpointGroups(svc, pods(full), defaultNodes)
	gotGroups, _ := DesiredEndpointGroups(svc, pods(slim), defaultNodes)
	if !semanticIgnoreResourceVersion.DeepEqual(gotSubsets, wantSubsets) || !semanticIgnoreResourceVersion.DeepEqual(gotGroups, wantGroups) {
		t.Errorf("slim pod publishes differently:\n%v %v\n%v %v", gotSubsets, gotGroups, wantSubsets, wantGroups)
	}
}

func TestNodeCacheTransformKeepsWhatHintsNeed(t *testing.T) {
	full := worker("a1", "zone-a", "4", controlPlane, func(n *corev1.Node) {
		n.Annotations = map[string]string{"big": "annotation"}
		n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse("8Gi")
		n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}}}
		n.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse})
	})
	out, err := NodeCacheTransform(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	slim := out.(*corev1.Node)
	if slim.Annotations != nil || slim.Status.Images != nil || len(slim.Status.Allocatable) != 1 || len(slim.Status.Conditions) != 1 ||
		!slim.Status.Conditions[0].LastHeartbeatTime.IsZero() {
		t.Errorf("transform kept fields hints do not need: %+v", slim)
	}
	want, wantRefusal := ZoneCPUOf([]*corev1.Node{full, worker("b1", "zone-b", "2")})
	got, gotRefusal := ZoneCPUOf([]*corev1.Node{slim, worker("b1", "zone-b", "2")})
	if fmt.Sprint(got) != fmt.Sprint(want) || gotRefusal != wantRefusal || !zoneCPUChanged(full, worker("a1", "zone-a", "4")) {
		t.Errorf("slim node counts differently: %v %q, want %v %q", got, gotRefusal, want, wantRefusal)
	}
}

// BenchmarkPodCacheTransform trims a pod as a kubelet and the API server leave it (managed fields,
// a sidecar, environment, volumes, five conditions), then trims it again, as a streaming
// informer does.
func BenchmarkPodCacheTransform(b *testing.B) {
	full := podWith(pod("a", "10.0.0.1"), func(p *corev1.Pod) {
		p.Annotations = map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-07T00:00:00Z"}
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", FieldsV1: metav1.NewFieldsV1(strings.Repeat("x", 2048))}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "registry.k8s.io/pause:3.10"})
		for i := range p.Spec.Containers {
			p.Spec.Containers[i].Env = []corev1.EnvVar{{Name: "A", Value: "b"}, {Name: "C", Value: "d"}}
			p.Spec.Containers[i].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		}
		p.Spec.Volumes = []corev1.Volume{{Name: "data"}}
		for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, "PodReadyToStartContainers"} {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue})
		}
	})
	pods := make([]*corev1.Pod, b.N)
	for i := range pods {
		pods[i] = full.DeepCopy()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		slim, _ := PodCacheTransform(pods[i])
		_, _ = PodCacheTransform(slim)
	}
}
