package testenv

import (
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// RoundRobinFront stands for the webhook Service in front of several manager replicas, as
// kube-proxy makes it: each new TCP connection to its address goes to the next backend port on
// 127.0.0.1; a backend that refuses the connection (its process is gone) is skipped, as its
// endpoint leaves the Service once its readiness check fails. Tests Add a backend only once it
// is ready, as the endpoints list only ready Pods. It never retries a connection once it is
// forwarded.
type RoundRobinFront struct {
	listener net.Listener
	mu       sync.Mutex
	backends []int
	next     int
}

// NewRoundRobinFront listens on 127.0.0.1:port.
func NewRoundRobinFront(port int) (*RoundRobinFront, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	f := &RoundRobinFront{listener: l}
	go f.serve()
	return f, nil
}

// Add makes the replica on backend port receive connections.
func (f *RoundRobinFront) Add(port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backends = append(f.backends, port)
}

// Remove stops sending new connections to port, as a terminating Pod leaves the endpoints;
// connections already forwarded stay.
func (f *RoundRobinFront) Remove(port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.backends, port); i >= 0 {
		f.backends = slices.Delete(f.backends, i, i+1)
	}
}

// Close stops listening.
func (f *RoundRobinFront) Close() error { return f.listener.Close() }

func (f *RoundRobinFront) serve() {
	for {
		conn, err := f.listener.Accept()
		if err != nil {
			return
		}
		go f.forward(conn)
	}
}

// dial connects to the next backend that accepts, trying each once.
func (f *RoundRobinFront) dial() (net.Conn, error) {
	f.mu.Lock()
	backends := slices.Clone(f.backends)
	start := f.next
	f.next++
	f.mu.Unlock()
	for k := range backends {
		port := backends[(start+k)%len(backends)]
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			return conn, nil
		}
	}
	return nil, errors.New("no backend accepts connections")
}

func (f *RoundRobinFront) forward(client net.Conn) {
	defer client.Close()
	backend, err := f.dial()
	if err != nil {
		return
	}
	defer backend.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Either side closing ends the connection, as a backend's death resets it.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	<-done
	<-done
}
