package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/cpuset"
)

// ConntrackSettings are the node's connection tracking limits and timeouts that kube-proxy
// sets when it starts (its flags of the same names, with its defaults). A node that runs the
// agent instead of kube-proxy needs them as much: the kernel's own established-TCP timeout
// is five days, and its table size does not grow with the CPUs.
type ConntrackSettings struct {
	// MaxPerCore is nf_conntrack_max per CPU of the node (at least Min, at most 1048576);
	// 0 leaves nf_conntrack_max and the hash table size as they are.
	MaxPerCore int
	Min        int
	// The timeouts, rounded down to seconds; 0 leaves the kernel's value.
	TCPEstablishedTimeout, TCPCloseWaitTimeout time.Duration
	UDPTimeout, UDPStreamTimeout               time.Duration
	// TCPBeLiberal sets nf_conntrack_tcp_be_liberal to 1 (false leaves it).
	TCPBeLiberal bool
}

// DefaultConntrackSettings are kube-proxy's defaults.
func DefaultConntrackSettings() ConntrackSettings {
	return ConntrackSettings{MaxPerCore: 32 * 1024, Min: 128 * 1024,
		TCPEstablishedTimeout: 24 * time.Hour, TCPCloseWaitTimeout: time.Hour}
}

const (
	// conntrackMaxLimit caps MaxPerCore's product, as kube-proxy does on many-core nodes.
	conntrackMaxLimit = 1 << 20
	sysctlDir         = "proc/sys/net/netfilter"
	hashsizeFile      = "sys/module/nf_conntrack/parameters/hashsize"
)

// ConntrackMax is the nf_conntrack_max the settings ask for on a node with cpus CPUs; 0
// asks for none.
func (s ConntrackSettings) ConntrackMax(cpus int) int {
	if s.MaxPerCore <= 0 {
		return 0
	}
	switch scaled := s.MaxPerCore * cpus; {
	case scaled > conntrackMaxLimit:
		return conntrackMaxLimit // even above Min, as kube-proxy caps it
	case scaled > s.Min:
		return scaled
	default:
		return s.Min
	}
}

// Apply sets the settings in the kernel whose /proc and /sys are under root ("/" on a node),
// for a node with cpus CPUs, as kube-proxy does: nf_conntrack_max only upwards, the hash
// table to at least a quarter of it, the rest to the value asked. A value already right is
// not written, so that once a privileged process has set them (--init-only), an agent that
// may not write them starts all the same. It returns what it changed, "name=value" each; the
// first failure stops it.
func (s ConntrackSettings) Apply(root string, cpus int) (changed []string, err error) {
	// set writes value unless the file holds it already (or more, when onlyUp).
	set := func(file string, value int, onlyUp bool) error {
		current, err := readInt(root, file)
		if err == nil && (current == value || onlyUp && current > value) {
			return nil
		}
		if err := writeInt(root, file, value); err != nil {
			return err
		}
		changed = append(changed, fmt.Sprintf("%s=%d", filepath.Base(file), value))
		return nil
	}
	if wanted := s.ConntrackMax(cpus); wanted > 0 {
		if err := set(filepath.Join(sysctlDir, "nf_conntrack_max"), wanted, true); err != nil {
			return changed, err
		}
		hashsize, err := readInt(root, hashsizeFile)
		if err != nil {
			return changed, err
		}
		if hashsize < wanted/4 {
			if err := writeInt(root, hashsizeFile, wanted/4); err != nil {
				return changed, err
			}
			changed = append(changed, fmt.Sprintf("hashsize=%d", wanted/4))
		}
	}
	for _, t := range []struct {
		sysctl  string
		timeout time.Duration
	}{
		{"nf_conntrack_tcp_timeout_established", s.TCPEstablishedTimeout},
		{"nf_conntrack_tcp_timeout_close_wait", s.TCPCloseWaitTimeout},
		{"nf_conntrack_udp_timeout", s.UDPTimeout},
		{"nf_conntrack_udp_timeout_stream", s.UDPStreamTimeout},
	} {
		if seconds := int(t.timeout / time.Second); seconds > 0 {
			if err := set(filepath.Join(sysctlDir, t.sysctl), seconds, false); err != nil {
				return changed, err
			}
		}
	}
	if s.TCPBeLiberal {
		if err := set(filepath.Join(sysctlDir, "nf_conntrack_tcp_be_liberal"), 1, false); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// NodeCPUs is the number of online CPUs of the node, which nf_conntrack_max is sized by: the
// limit is the node's, so a process confined to fewer CPUs must not count only its own.
func NodeCPUs() int {
	if n, err := cpuset.NumCPU(); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}

func readInt(root, file string) (int, error) {
	b, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return 0, conntrackFileError("read", file, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read /%s: %w", file, err)
	}
	return n, nil
}

func writeInt(root, file string, value int) error {
	if err := os.WriteFile(filepath.Join(root, file), []byte(strconv.Itoa(value)), 0o644); err != nil {
		return conntrackFileError(fmt.Sprintf("write %d to", value), file, err)
	}
	return nil
}

// conntrackFileError says what failed and, for the two usual causes, what to do.
func conntrackFileError(op, file string, err error) error {
	var hint string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint = " (is the nf_conntrack module loaded?)"
	case errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "read-only file system"):
		hint = " (only a privileged process may set it, and nf_conntrack_max only in the host's network namespace: " +
			"run --init-only in a privileged init container first, or leave the settings as they are with " +
			"--conntrack-max-per-core=0 and the timeouts 0)"
	}
	return fmt.Errorf("%s /%s: %w%s", op, file, err, hint)
}
