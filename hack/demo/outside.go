package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Environment handed to the copy of the demo that runs inside the new namespaces.
const (
	insideEnv           = "KUBE_CLUSTERIP_DEMO_INSIDE"
	workDirEnv          = "KUBE_CLUSTERIP_DEMO_WORKDIR"
	parentNamespacesEnv = "KUBE_CLUSTERIP_DEMO_PARENT_NAMESPACES" // the inner demo checks it left them
)

// stopGrace is how long the inner demo gets to stop its processes after Ctrl-C before it is
// killed; killing it is safe too, since that ends its PID namespace and everything in it.
const stopGrace = 20 * time.Second

// runOutside re-executes the demo in new network, mount and PID namespaces and waits for it.
// The PID namespace is what makes cleanup certain: when its first process exits, however it
// exits, the kernel kills every process in it, and with the last of them go the network
// namespaces and the mounts that name them.
func runOutside(o options) error {
	if err := checkPrerequisites(&o); err != nil {
		return err
	}
	workDir, err := os.MkdirTemp("", "kube-clusterip-demo-")
	if err != nil {
		return err
	}
	fmt.Printf("work directory: %s\n", workDir)

	args := []string{"--manager", o.manager, "--repo", o.repo}
	if o.keep {
		args = append(args, "--keep")
	}
	inner := exec.Command("/proc/self/exe", args...)
	inner.Stdin, inner.Stdout, inner.Stderr = os.Stdin, os.Stdout, os.Stderr
	inner.Env = append(os.Environ(), insideEnv+"=1", workDirEnv+"="+workDir, "TMPDIR="+workDir,
		parentNamespacesEnv+"="+strings.Join(namespaceIDs(os.Getpid()), " "))
	inner.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		// If this process dies, so does the inner demo (and with it its namespaces).
		Pdeathsig: syscall.SIGKILL,
		// Its own process group: Ctrl-C reaches only this process, which asks the inner
		// demo to stop in order (etcd last) instead of every process dying at once.
		Setpgid: true,
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	if err := inner.Start(); err != nil {
		os.RemoveAll(workDir)
		return fmt.Errorf("start the demo in new namespaces (needs root and a kernel with user-visible namespaces): %w", err)
	}
	namespaces := namespaceIDs(inner.Process.Pid)
	fmt.Printf("demo namespaces: %s\n", strings.Join(namespaces, " "))

	done := make(chan error, 1)
	go func() { done <- inner.Wait() }()
	var runErr error
	select {
	case runErr = <-done:
	case sig := <-signals:
		fmt.Printf("\n%s: stopping the demo\n", sig)
		_ = inner.Process.Signal(syscall.SIGTERM)
		select {
		case runErr = <-done:
		case <-time.After(stopGrace):
			_ = inner.Process.Kill()
			runErr = <-done
		}
	}
	leftovers := leftBehind(namespaces, workDir)
	if err := os.RemoveAll(workDir); err != nil {
		leftovers = append(leftovers, fmt.Sprintf("work directory %s: %v", workDir, err))
	}
	if len(leftovers) > 0 {
		return errors.Join(runErr, fmt.Errorf("left behind: %s", strings.Join(leftovers, "; ")))
	}
	fmt.Println("cleaned up: no process left in the demo's namespaces, namespaces gone, work directory removed")
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		return fmt.Errorf("the demo failed (exit code %d)", exitErr.ExitCode())
	}
	return runErr
}

// namespaceIDs returns the network, mount and PID namespaces of pid, as "net:[4026...]".
func namespaceIDs(pid int) []string {
	var ids []string
	for _, kind := range []string{"net", "mnt", "pid"} {
		if id, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind)); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// leftBehind lists processes that still live in one of the demo's namespaces or still use its
// work directory. The PID namespace ends with its first process, but the kernel reaps the rest
// asynchronously, so give it a moment.
func leftBehind(namespaces []string, workDir string) []string {
	var found []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		found = processesIn(namespaces, workDir)
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
	}
}

func processesIn(namespaces []string, workDir string) []string {
	var found []string
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		for _, kind := range []string{"net", "mnt", "pid"} {
			id, err := os.Readlink(filepath.Join(dir, "ns", kind))
			if err == nil && slices.Contains(namespaces, id) {
				found = append(found, fmt.Sprintf("process %s in %s", filepath.Base(dir), id))
			}
		}
		if cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && strings.Contains(string(cmdline), workDir) {
			found = append(found, fmt.Sprintf("process %s using %s", filepath.Base(dir), workDir))
		}
	}
	return found
}
