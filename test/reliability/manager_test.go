package reliability

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// managerProcess is the kube-clusterip binary with the allocator (webhook, repair loop) and the
// endpoints controllers, run as a child process whose output goes to GinkgoWriter.
type managerProcess struct {
	binary, kubeconfig, certDir string
	webhookPort                 int
	probeAddr                   string
	// name marks the process's log lines; extraArgs are appended to its flags. A replica
	// (replica true) runs no datapath: the replicas share the suite's one network namespace.
	name      string
	extraArgs []string
	replica   bool

	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has exited
	starts int
}

func newManagerProcess(binary, kubeconfig, certDir string, webhookPort int) *managerProcess {
	return &managerProcess{binary: binary, kubeconfig: kubeconfig, certDir: certDir,
		webhookPort: webhookPort, probeAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort()))}
}

// start runs the manager and waits until /readyz passes (pools rebuilt, webhook serving).
func (m *managerProcess) start() {
	m.launch()
	m.waitReady()
}

// launch runs the manager without waiting for it.
func (m *managerProcess) launch() {
	m.starts++
	args := []string{
		"--kubeconfig=" + m.kubeconfig,
		"--controllers=allocator,endpoints",
		"--webhook-cert-dir=" + m.certDir,
		"--webhook-port=" + strconv.Itoa(m.webhookPort),
		"--health-probe-bind-address=" + m.probeAddr,
		"--metrics-bind-address=0",
		// Reservations of creates that never completed (the process died between admission
		// and the write) expire quickly in the tests.
		"--clusterip-reservation-grace-period=5s",
	}
	args = append(args, m.extraArgs...)
	if datapathMissing() == "" && !m.replica {
		// This node's datapath too: the suite runs in a private network namespace.
		// Its conntrack timeouts are the namespace's own, the table size the host's: left alone.
		args = append(args, "--datapath", "--conntrack-max-per-core=0", "--node-name="+nodeName, "--cluster-cidr=10.244.0.0/16",
			"--service-cluster-ip-range=10.96.0.0/12")
	}
	m.cmd = exec.Command(m.binary, args...)
	prefix := fmt.Sprintf("[manager%s #%d] ", m.name, m.starts)
	m.cmd.Stdout = &prefixWriter{prefix: prefix}
	m.cmd.Stderr = m.cmd.Stdout
	Expect(m.cmd.Start()).To(Succeed())
	exited := make(chan struct{})
	m.exited = exited
	cmd := m.cmd
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
}

// waitReady waits until the running manager answers /readyz with 200.
func (m *managerProcess) waitReady() {
	Eventually(func(g Gomega) {
		g.Expect(m.exited).NotTo(BeClosed(), "the manager exited")
		g.Expect(m.probe("/readyz")).To(Equal(http.StatusOK))
	}).Should(Succeed(), "manager ready at %s", m.probeAddr)
}

// probe returns the status code of a health endpoint, or 0 when it does not answer.
func (m *managerProcess) probe(path string) int {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + m.probeAddr + path)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// running says whether the current process has not exited.
func (m *managerProcess) running() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// pid is the current process's id.
func (m *managerProcess) pid() int { return m.cmd.Process.Pid }

// kill sends SIGKILL, as an OOM kill or a node failure would, and waits for the exit.
func (m *managerProcess) kill() {
	if m.cmd == nil || m.cmd.Process == nil || !m.running() {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	Eventually(m.exited).WithTimeout(30 * time.Second).Should(BeClosed())
}

// stop sends SIGTERM, as a rolling update does, and waits for the exit.
func (m *managerProcess) stop() {
	if m.cmd == nil || m.cmd.Process == nil || !m.running() {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	Eventually(m.exited).WithTimeout(time.Minute).Should(BeClosed())
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// prefixWriter sends the manager's log lines to GinkgoWriter, each marked with which start
// of the manager wrote it.
type prefixWriter struct {
	prefix string
	buf    []byte
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(GinkgoWriter, "%s%s\n", w.prefix, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}
