package netnstest

import (
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Run runs f on a thread switched into ns.
func Run(ns netns.NsHandle, f func() error) error {
	return switched(func() error { return netns.Set(ns) }, f)
}

// switched runs enter, which switches the calling thread into another network namespace, then
// f (if any), on a locked thread, and switches the thread back. If it cannot, the thread stays
// locked so that the runtime discards it instead of reusing it elsewhere.
func switched(enter, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	err = enter()
	if err == nil && f != nil {
		err = f()
	}
	if serr := netns.Set(orig); serr != nil {
		return fmt.Errorf("return to the original network namespace: %w", serr)
	}
	runtime.UnlockOSThread()
	return err
}

// SetUpNode readies the calling thread's network namespace to play a node: it writes the sysctls
// (path under /proc/sys/net: value, e.g. "ipv4/ip_forward": "1") and brings loopback up.
func SetUpNode(sysctls map[string]string) error {
	for path, value := range sysctls {
		if err := os.WriteFile("/proc/sys/net/"+path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl net/%s: %w", path, err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}
