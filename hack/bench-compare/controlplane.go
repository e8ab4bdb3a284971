package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
)

// controlPlane is an envtest kube-apiserver and etcd, with an admin kubeconfig on disk for the
// upstream components.
type controlPlane struct {
	env        *envtest.Environment
	cfg        *rest.Config
	kubeconfig string
	// client has no client-side rate limit: the fixtures are not what we measure.
	client client.WithWatch
}

// startControlPlane starts kube-apiserver and etcd from assets, logging into workDir.
func startControlPlane(assets, workDir string) (*controlPlane, error) {
	log, err := os.Create(filepath.Join(workDir, "control-plane.log"))
	if err != nil {
		return nil, err
	}
	env := controlplane.New(assets, log)
	// The NodePort workload's 10k Services take nodePorts 20000-29999.
	env.ControlPlane.GetAPIServer().Configure().Set("service-node-port-range", "20000-32767")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", assets, err)
	}
	cp := &controlPlane{env: env, cfg: cfg, kubeconfig: filepath.Join(workDir, "kubeconfig")}
	if cp.client, err = client.NewWithWatch(cp.unthrottled(), client.Options{Scheme: clientgoscheme.Scheme}); err != nil {
		_ = env.Stop()
		return nil, err
	}
	if _, err := controlplane.WriteAdminKubeconfig(env, "bench-admin", cp.kubeconfig); err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("write an admin kubeconfig: %w", err)
	}
	return cp, nil
}

// unthrottled is a copy of the control plane's config without client-side rate limits: the
// fixtures are not what we measure.
func (cp *controlPlane) unthrottled() *rest.Config {
	cfg := rest.CopyConfig(cp.cfg)
	cfg.QPS, cfg.Burst = -1, 0
	return cfg
}

func (cp *controlPlane) stop() {
	if err := cp.env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "bench-compare: stop control plane: %v\n", err)
	}
}

// process is an upstream component we started; stop ends it (and only it).
type process struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// startProcess runs binary with args, output to workDir/<name>.log.
func startProcess(workDir, binary string, args ...string) (*process, error) {
	name := filepath.Base(binary)
	log, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		log.Close()
	}()
	return p, nil
}

// exited reports an early exit of the process, if any.
func (p *process) exited() error {
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil {
			return fmt.Errorf("%s exited early (see its log)", p.name)
		}
		return fmt.Errorf("%s exited early (see its log): %w", p.name, err)
	default:
		return nil
	}
}

func (p *process) stop() {
	if p.exited() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// pollInterval is how often poll asks.
const pollInterval = 20 * time.Millisecond

// poll calls cond every pollInterval until it returns true or an error, or ctx ends.
func poll(ctx context.Context, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-time.After(pollInterval):
		}
	}
}
