package datapath

import (
	"fmt"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// keptSocket is a netfilter netlink socket (a plain one for our batches, or google/nftables'
// for its dumps) kept open from one use to the next, in the network namespace of the thread
// that opened it; a use from a thread in another namespace (tests move between namespaces)
// opens a new one there.
//
// Why keep it: closing a netfilter socket makes the kernel wait until what earlier
// transactions deleted is freed, an RCU grace period (10-60 ms seen on a busy two-CPU VM).
// With a socket per batch, every endpoint change that removed an element waited for it.
type keptSocket struct {
	mu    sync.Mutex
	netns netnsID
	conn  *netlink.Conn
	nft   *nftables.Conn // the same kind of socket, for google/nftables' dumps
}

// netnsID identifies a network namespace by its nsfs inode.
type netnsID struct{ dev, ino uint64 }

// threadNetns is the network namespace of the calling thread.
func threadNetns() (netnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return netnsID{}, fmt.Errorf("read the thread's network namespace: %w", err)
	}
	return netnsID{dev: st.Dev, ino: st.Ino}, nil
}

// use runs fn with the socket for the calling thread's namespace, opening it if needed.
// The socket is closed after an error of fn, so that answers fn left unread never reach
// the next use.
func (s *keptSocket) use(fn func(*netlink.Conn) error) error {
	return s.with(false, func() error { return fn(s.conn) })
}

// useNFT is use for google/nftables, over a lasting connection of its own.
func (s *keptSocket) useNFT(fn func(*nftables.Conn) error) error {
	return s.with(true, func() error { return fn(s.nft) })
}

func (s *keptSocket) with(forNFT bool, fn func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.openLocked(forNFT); err != nil {
		return err
	}
	if err := fn(); err != nil {
		s.closeLocked()
		return err
	}
	return nil
}

func (s *keptSocket) openLocked(forNFT bool) error {
	netns, err := threadNetns()
	if err != nil {
		return err
	}
	if netns != s.netns {
		s.closeLocked()
		s.netns = netns
	}
	if forNFT && s.nft == nil {
		if s.nft, err = nftables.New(nftables.AsLasting()); err != nil {
			return fmt.Errorf("open netlink connection: %w", err)
		}
	}
	if !forNFT && s.conn == nil {
		if s.conn, err = netlink.Dial(unix.NETLINK_NETFILTER, nil); err != nil {
			return fmt.Errorf("open netlink connection: %w", err)
		}
	}
	return nil
}

// close closes the sockets; the next use opens new ones.
func (s *keptSocket) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *keptSocket) closeLocked() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	if s.nft != nil {
		_ = s.nft.CloseLasting()
		s.nft = nil
	}
	s.netns = netnsID{}
}
