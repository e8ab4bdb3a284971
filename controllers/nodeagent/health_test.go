package nodeagent

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func TestProxyHealthAnswersAsKubeProxy(t *testing.T) {
	tainted := &corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: ToBeDeletedTaint, Effect: corev1.TaintEffectNoSchedule}}}}
	deleting := &corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: ptr.To(metav1.Now())}}
	const timeout = time.Minute
	cases := []struct {
		name                   string
		steps                  func(h *ProxyHealth, c *clocktesting.FakeClock)
		wantHealthz, wantLivez int
	}{
		{name: "starting up, node unknown: live, not eligible", steps: func(*ProxyHealth, *clocktesting.FakeClock) {},
			wantHealthz: 503, wantLivez: 200},
		{name: "synced, node fine", steps: func(h *ProxyHealth, _ *clocktesting.FakeClock) {
			h.SetNode(&corev1.Node{})
			h.Updated()
		}, wantHealthz: 200, wantLivez: 200},
		{name: "an update queued for less than the timeout", steps: func(h *ProxyHealth, c *clocktesting.FakeClock) {
			h.SetNode(&corev1.Node{})
			h.Updated()
			h.QueuedUpdate()
			c.Step(timeout - time.Second)
		}, wantHealthz: 200, wantLivez: 200},
		{name: "an update queued for longer than the timeout fails both", steps: func(h *ProxyHealth, c *clocktesting.FakeClock) {
			h.SetNode(&corev1.Node{})
			h.Updated()
			h.QueuedUpdate()
			c.Step(timeout / 2)
			h.QueuedUpdate() // a later one does not reset the wait
			c.Step(timeout / 2)
		}, wantHealthz: 503, wantLivez: 503},
		{name: "a sync after the stale update heals both", steps: func(h *ProxyHealth, c *clocktesting.FakeClock) {
			h.SetNode(&corev1.Node{})
			h.Updated()
			h.QueuedUpdate()
			c.Step(2 * timeout)
			h.Updated()
		}, wantHealthz: 200, wantLivez: 200},
		{name: "node tainted ToBeDeletedByClusterAutoscaler fails healthz only", steps: func(h *ProxyHealth, _ *clocktesting.FakeClock) {
			h.SetNode(tainted)
			h.Updated()
		}, wantHealthz: 503, wantLivez: 200},
		{name: "node being deleted fails healthz only", steps: func(h *ProxyHealth, _ *clocktesting.FakeClock) {
			h.SetNode(deleting)
			h.Updated()
		}, wantHealthz: 503, wantLivez: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
			h := NewProxyHealth(c, timeout)
			tc.steps(h, c)
			for path, want := range map[string]int{"/healthz": tc.wantHealthz, "/livez": tc.wantLivez} {
				rec := httptest.NewRecorder()
				h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				var body proxyHealthBody
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("%s: body %q: %v", path, rec.Body.String(), err)
				}
				if rec.Code != want || body.Healthy != h.Healthy() || !body.CurrentTime.Equal(c.Now()) {
					t.Errorf("%s: %d %s; want %d", path, rec.Code, rec.Body.String(), want)
				}
				if (path == "/healthz") != (body.NodeEligible != nil) {
					t.Errorf("%s: nodeEligible %v: only /healthz reports it", path, body.NodeEligible)
				}
			}
		})
	}
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestServiceHealthServerAnswersWithLocalEndpoints(t *testing.T) {
	healthy := true
	servers := &ServiceHealthServers{Addresses: []string{"127.0.0.1"}, ProxyHealthy: func() bool { return healthy }}
	t.Cleanup(servers.Close)
	key := types.NamespacedName{Namespace: "shop", Name: "ingress"}
	port := freePort(t)
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	want := func(n int, ok bool) string { // kube-proxy's bytes
		return fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"ingress\"\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}", n, ok)
	}
	for _, step := range []struct {
		name    string
		local   int
		healthy bool
		code    int
	}{
		{"two local endpoints", 2, true, 200},
		{"no local endpoint", 0, true, 503},
		{"local endpoints but the proxy is unhealthy", 1, false, 503},
	} {
		healthy = step.healthy
		if err := servers.Set(key, port, step.local); err != nil {
			t.Fatal(err)
		}
		if code, body := get(); code != step.code || body != want(step.local, step.healthy) {
			t.Errorf("%s: %d %s; want %d %s", step.name, code, body, step.code, want(step.local, step.healthy))
		}
	}
	if err := servers.Set(key, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
		t.Errorf("the server still answers after the Service lost its healthCheckNodePort")
	}
}

func TestProxiedBy(t *testing.T) {
	labelled := func(labels map[string]string) *metav1.ObjectMeta { return &metav1.ObjectMeta{Labels: labels} }
	cases := []struct {
		name      string
		labels    map[string]string
		proxyName string
		want      bool
	}{
		{"unlabelled, replacing kube-proxy", nil, "", true},
		{"labelled for another proxy", map[string]string{LabelServiceProxyName: "other"}, "", false},
		{"labelled for us", map[string]string{LabelServiceProxyName: "clusterip"}, "clusterip", true},
		{"unlabelled, beside kube-proxy: kube-proxy's", nil, "clusterip", false},
		{"labelled for kube-proxy's neighbour", map[string]string{LabelServiceProxyName: "other"}, "clusterip", false},
		{"headless slice", map[string]string{corev1.IsHeadlessService: ""}, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProxiedBy(labelled(tc.labels), tc.proxyName); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestServiceCIDRsOf(t *testing.T) {
	cidr := func(cidrs ...string) networkingv1.ServiceCIDR {
		return networkingv1.ServiceCIDR{Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}
	}
	fallback := []string{"10.96.0.0/12"}
	if got := ServiceCIDRsOf(nil, fallback); len(got) != 1 || got[0] != fallback[0] {
		t.Errorf("no ServiceCIDRs: %v, want the fallback", got)
	}
	got := ServiceCIDRsOf([]networkingv1.ServiceCIDR{cidr("10.96.0.0/12", "fd00::/108"), cidr("10.100.0.0/16", "10.96.0.0/12")}, fallback)
	if want := []string{"10.100.0.0/16", "10.96.0.0/12", "fd00::/108"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestLocalReadyEndpoints(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}}}
	ep := func(ip, node string, ready bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}
	}
	slices := []*discoveryv1.EndpointSlice{
		{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{ep("10.0.0.1", "node-a", true), ep("10.0.0.2", "node-a", false), ep("10.0.0.3", "node-b", true)}},
		{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{ep("10.0.0.1", "node-a", true), ep("10.0.0.4", "node-a", true)}},
		{AddressType: discoveryv1.AddressTypeIPv6, Endpoints: []discoveryv1.Endpoint{ep("fd00::1", "node-a", true)}},
	}
	if got := LocalReadyEndpoints(svc, slices, "node-a"); got != 2 {
		t.Errorf("got %d local ready endpoints, want 2 (10.0.0.1 once, 10.0.0.4)", got)
	}
}

func TestProxyHealthBodyIsKubeProxys(t *testing.T) {
	c := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewProxyHealth(c, time.Minute)
	h.SetNode(&corev1.Node{})
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Body.String()
	}
	const started = `"2026-01-02T03:04:05Z"`
	// Healthy answers report the current time as lastUpdated; no family is listed before a sync.
	if got, want := get("/livez"), `{"lastUpdated":`+started+`,"currentTime":`+started+`,"healthy":true}`; got != want {
		t.Errorf("before the first sync:\n got %s\nwant %s", got, want)
	}
	h.Updated()
	c.Step(time.Second)
	family := `{"lastUpdated":` + started + `,"healthy":true}`
	want := `{"lastUpdated":"2026-01-02T03:04:06Z","currentTime":"2026-01-02T03:04:06Z","nodeEligible":true,"healthy":true,` +
		`"status":{"IPv4":` + family + `,"IPv6":` + family + `}}`
	if got := get("/healthz"); got != want {
		t.Errorf("after a sync:\n got %s\nwant %s", got, want)
	}
}
