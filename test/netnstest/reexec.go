// Package netnstest keeps what tests (and the demo) do to links, routes and nftables away from
// the host: a test binary re-executes itself in a network namespace of its own, and "pods" are
// further namespaces joined to it by veth pairs. Nothing here links a namespace to the host's.
// SetUpNode and VethNetns change the calling thread's namespace: call them only in one that Main
// (or the demo's re-exec) made.
package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Main is the body of a TestMain whose tests must never touch the host's network. As root, the
// first run re-executes the test binary in a new network namespace (clone with CLONE_NEWNET),
// with the environment variable env set to "1", and returns its exit code. The re-executed binary
// (and a run without root, where env stays unset) calls setUp if Inside(env), then run. who
// prefixes the messages.
func Main(env, who string, setUp func() error, run func() int) int {
	if os.Getenv(env) == "" && os.Geteuid() == 0 {
		return reexec(env, who)
	}
	if Inside(env) {
		if err := setUp(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: set up the private network namespace: %v\n", who, err)
			return 1
		}
	}
	return run()
}

// Inside says whether Main re-executed this process into its private network namespace.
func Inside(env string) bool { return os.Getenv(env) == "1" }

// reexec runs this binary again in a new network namespace and returns its exit code. If the
// namespace cannot be made, it fails rather than run as root in the host's namespace.
func reexec(env, who string) int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env+"=1")
	// Pdeathsig: if this process dies, the tests in the namespace die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		return exitErr.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "%s: cannot re-exec in a private network namespace: %v\n", who, err)
		return -1
	}
}

// IsFuzzWorker says whether the fuzzing coordinator started this process: it shares the
// coordinator's namespace, so Main must not run (or set it up) again.
func IsFuzzWorker() bool { return hasFlag("-test.fuzzworker") }

// Fuzzing says whether this process fuzzes, as coordinator or worker.
func Fuzzing() bool { return hasFlag("-test.fuzz") }

func hasFlag(prefix string) bool {
	for _, arg := range os.Args[1:] {
		if strings.HasPrefix(arg, prefix) {
			return true
		}
	}
	return false
}

// Missing names what tests that program nftables lack here (root, the nft binary, Main's private
// namespace marked by env), or returns "".
func Missing(env string) string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		missing = append(missing, "the nft binary (apt-get install nftables)")
	}
	if !Inside(env) {
		missing = append(missing, "a private network namespace (TestMain re-exec with CLONE_NEWNET)")
	}
	return strings.Join(missing, ", ")
}
