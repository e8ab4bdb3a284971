package endpoints

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// TestWritersHaveBudgetsOfTheirOwn checks that no writer waits for another's rate limit, nor
// for the manager's client's, even when the manager's config carries a limiter: at QPS 1 and
// Burst 1, the four writes of one kind go out at once (one shared bucket would make each after
// the first wait a second), each with a user agent naming its writer.
func TestWritersHaveBudgetsOfTheirOwn(t *testing.T) {
	var mu sync.Mutex
	var agents []string
	// The API server answers a create with the object it was sent.
	apiServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.Header.Get("User-Agent"))
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	}))
	defer apiServer.Close()

	cfg := &rest.Config{Host: apiServer.URL, QPS: 1, Burst: 1, UserAgent: "kube-clusterip",
		RateLimiter: flowcontrol.NewTokenBucketRateLimiter(1, 1)}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  clientgoscheme.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		MapperProvider: func(*rest.Config, *http.Client) (meta.RESTMapper, error) {
			mapper := meta.NewDefaultRESTMapper(nil)
			mapper.Add(corev1.SchemeGroupVersion.WithKind("Endpoints"), meta.RESTScopeNamespace)
			return mapper, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	writers := []client.Writer{mgr.GetClient()}
	names := []string{endpointsWriterName, sliceWriterName, mirroringWriterName}
	for _, name := range names {
		c, err := writerClient(mgr, client.New, name)
		if err != nil {
			t.Fatal(err)
		}
		writers = append(writers, c)
	}

	ctx := context.Background()
	start := time.Now()
	for _, w := range writers {
		ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "backend-service"}}
		if err := w.Create(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("%d writes at QPS 1, Burst 1 took %s: the writers share a rate limiter", len(writers), took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) != len(writers) {
		t.Fatalf("API server saw %d requests, want %d: %q", len(agents), len(writers), agents)
	}
	for i, name := range names {
		if got := agents[i+1]; !strings.HasPrefix(got, "kube-clusterip/") || !strings.HasSuffix(got, "/"+name) {
			t.Errorf("user agent of the %s writer: got %q, want kube-clusterip/.../%s", name, got, name)
		}
	}
}
