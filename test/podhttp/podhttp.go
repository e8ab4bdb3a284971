// Package podhttp is the HTTP that the pods of the demo and of make test-e2e speak: a server that
// answers every request with the pod's name, so a client sees which endpoint the datapath chose,
// and a client that opens a new connection per request, so that each request meets that choice
// anew. It imports the standard library only: the e2e pods' static binary uses it.
package podhttp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Answer is the pods' handler: every request gets answer and a newline.
func Answer(answer string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, answer) })
}

// Dial opens a connection as net.Dialer's DialContext does.
type Dial func(ctx context.Context, network, address string) (net.Conn, error)

// Get sends one GET to url on a new connection opened by dial (nil: the process's own network),
// waits at most timeout, and returns the body without surrounding white space. An answer with a
// status other than 200 is an error that carries the body.
func Get(ctx context.Context, url string, dial Dial, timeout time.Duration) (string, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read the answer of %s: %w", url, err)
	}
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered status %d: %s", url, resp.StatusCode, answer)
	}
	return answer, nil
}
