package ipam

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A replica whose pools are not rebuilt yet fails the webhook call (the webhook's failurePolicy
// decides) instead of answering; once ready it passes the call on.
func TestFailWhileRebuilding(t *testing.T) {
	r, _ := newTestRegistry(t)
	passed := 0
	handler := failWhileRebuilding(r, 10*time.Millisecond, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		passed++
		w.WriteHeader(http.StatusOK)
	}))

	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, MutatePath, nil))
	if rec.Code != http.StatusServiceUnavailable || passed != 0 {
		t.Fatalf("before the rebuild: status %d, handler called %d times; want 503 and 0", rec.Code, passed)
	}
	if !strings.Contains(rec.Body.String(), "still being rebuilt") {
		t.Errorf("body %q does not say why", rec.Body.String())
	}

	r.MarkReady()
	rec = httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, MutatePath, nil))
	if rec.Code != http.StatusOK || passed != 1 {
		t.Fatalf("after the rebuild: status %d, handler called %d times; want 200 and 1", rec.Code, passed)
	}
}
