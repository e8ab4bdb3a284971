package datapath

import (
	"errors"
	"testing"

	"github.com/mdlayher/netlink"
)

// A kept socket is reused while the calling thread stays in its network namespace, opened
// anew in another namespace, and closed after a use that failed.
func TestKeptSocketIsReusedInItsNamespaceOnly(t *testing.T) {
	requireDatapath(t)
	var s keptSocket
	t.Cleanup(s.close)
	conn := func() *netlink.Conn {
		t.Helper()
		var got *netlink.Conn
		if err := s.use(func(c *netlink.Conn) error { got = c; return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := conn()
	if again := conn(); again != first {
		t.Fatalf("second use in the same namespace opened a new socket")
	}

	pod := newPod(t, "elsewhere", "")
	var inPod *netlink.Conn
	if err := inNetns(pod.ns, func() error {
		return s.use(func(c *netlink.Conn) error { inPod = c; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if inPod == first {
		t.Fatalf("a use from another network namespace got the first namespace's socket")
	}
	back := conn()
	if back == inPod {
		t.Fatalf("back in the first namespace, the use got the pod's socket")
	}

	failure := errors.New("answers left unread")
	if err := s.use(func(*netlink.Conn) error { return failure }); !errors.Is(err, failure) {
		t.Fatalf("use returned %v, want %v", err, failure)
	}
	if after := conn(); after == back {
		t.Fatalf("the socket of a failed use was kept")
	}
}
