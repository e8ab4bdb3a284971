package podhttp

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGetAnswer(t *testing.T) {
	server := httptest.NewServer(Answer("backend-1"))
	defer server.Close()
	got, err := Get(context.Background(), server.URL, nil, 5*time.Second)
	if err != nil || got != "backend-1" {
		t.Fatalf("Get = %q, %v; want backend-1", got, err)
	}
}

func TestGetRefusesAnErrorStatus(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unready", http.StatusServiceUnavailable)
	}))
	defer server.Close()
	got, err := Get(context.Background(), server.URL, nil, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "status 503: unready") {
		t.Fatalf("Get = %q, %v; want an error with the status and the body", got, err)
	}
}

func TestGetOpensANewConnectionPerRequest(t *testing.T) {
	server := httptest.NewUnstartedServer(Answer("backend-1"))
	var connections atomic.Int32
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			connections.Add(1)
		}
	}
	server.Start()
	defer server.Close()
	for range 3 {
		if _, err := Get(context.Background(), server.URL, nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	server.Close() // waits for the connections, so the count is final
	if n := connections.Load(); n != 3 {
		t.Fatalf("%d connections for 3 requests; want one per request", n)
	}
}
