package ipam

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// Benchmark shape of BenchmarkAdmission.
const (
	admissionServices = 1000
	admissionClients  = 50
)

// BenchmarkAdmission creates 1000 Services through our webhooks on a real control plane, from
// 50 concurrent clients, and reports the latency inside the mutating webhook's HTTP handler
// (p50/p99, the time that assigns the ClusterIP), the validating one's, how many requests failed
// or were denied (create errors plus webhook answers with allowed=false, from
// clusterip_webhook_duration_seconds), and how many distinct ClusterIPs from 10.96.0.0/12 the
// Services hold (want 1000). replicas=1 is one manager without claims (a single replica);
// replicas=3 is three managers in this process, each with its own webhook server, behind a
// round-robin TCP front on the webhook port, claiming every address they hand out. floor is
// the least any webhook that assigns ClusterIPs can take on this machine (startFloorWebhooks):
// ours ÷ floor is what our handlers add. The clients run in a process of their own
// (createInClientProcess).
//
//	go test ./controllers/ipam -run '^$' -bench BenchmarkAdmission -benchtime 1x
func BenchmarkAdmission(b *testing.B) {
	if _, err := testenv.Assets(); err != nil {
		b.Skip(err.Error())
	}
	ctrl.SetLogger(logr.Discard())
	for _, side := range []string{"replicas=1", "replicas=3", "floor"} {
		b.Run(side, func(b *testing.B) { benchmarkAdmission(b, side) })
	}
}

func benchmarkAdmission(b *testing.B, side string) {
	env := testenv.New()
	env.ControlPlane.GetAPIServer().Out, env.ControlPlane.GetAPIServer().Err = io.Discard, io.Discard
	env.ControlPlane.Etcd.Out, env.ControlPlane.Etcd.Err = io.Discard, io.Discard
	testenv.WithWebhooks(env)
	cfg, err := env.Start()
	if err != nil {
		b.Fatalf("start control plane: %v", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			b.Errorf("stop control plane: %v", err)
		}
	}()

	wio := &env.WebhookInstallOptions
	ctx, cancel := context.WithCancel(context.Background())
	var timings []*timingServer
	var stopped []chan error
	defer func() { // before the control plane stops
		cancel()
		for _, done := range stopped {
			if err := <-done; err != nil {
				b.Errorf("manager: %v", err)
			}
		}
	}()
	start := func(port int, opts Options) {
		timing, done := startBenchReplica(ctx, b, cfg, wio.LocalServingCertDir, port, opts)
		timings, stopped = append(timings, timing), append(stopped, done)
	}
	switch side {
	case "replicas=1":
		start(wio.LocalServingPort, Options{})
	case "floor":
		timing, done := startFloorWebhooks(ctx, b, wio.LocalServingCertDir, wio.LocalServingPort)
		timings, stopped = append(timings, timing), append(stopped, done)
	case "replicas=3":
		front, err := testenv.NewRoundRobinFront(wio.LocalServingPort)
		if err != nil {
			b.Fatal(err)
		}
		defer front.Close()
		for range 3 {
			port, err := freeLocalPort()
			if err != nil {
				b.Fatal(err)
			}
			start(port, Options{ClaimNamespace: "kube-system"})
			front.Add(port)
		}
	}

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ns := "admission-bench"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		b.Fatal(err)
	}
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if _, err := controlplane.WriteAdminKubeconfig(env, "admission-clients", kubeconfig); err != nil {
		b.Fatal(err)
	}
	deniedBefore := deniedAdmissions(b)
	for _, t := range timings {
		t.reset()
	}

	hitsBefore, missesBefore := testutil.ToFloat64(stashTakes.WithLabelValues("true")), testutil.ToFloat64(stashTakes.WithLabelValues("false"))
	b.ResetTimer()
	createErrors := createInClientProcess(b, kubeconfig, ns)
	b.StopTimer()
	hits := testutil.ToFloat64(stashTakes.WithLabelValues("true")) - hitsBefore
	if taken := hits + testutil.ToFloat64(stashTakes.WithLabelValues("false")) - missesBefore; taken > 0 {
		b.ReportMetric(100*hits/taken, "stash-hit-%")
	}

	var mutate, validate []time.Duration
	for _, t := range timings {
		mutate = append(mutate, t.durations(MutatePath)...)
		validate = append(validate, t.durations(ValidatePath)...)
	}
	errs := createErrors + deniedAdmissions(b) - deniedBefore
	if len(mutate) < admissionServices {
		b.Errorf("the mutating webhook answered %d of %d creates", len(mutate), admissionServices)
	}
	b.ReportMetric(ms(percentile(mutate, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(mutate, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(validate, 50)), "validate-p50-ms")
	b.ReportMetric(ms(percentile(validate, 99)), "validate-p99-ms")
	b.ReportMetric(float64(errs), "errors")
	b.ReportMetric(float64(distinctClusterIPs(ctx, b, c, ns)), "distinct-ips")
}

// startBenchReplica starts a manager with ClusterIP assignment whose webhook server listens on
// port, and waits until it answers; it stops when ctx ends, then done receives.
func startBenchReplica(ctx context.Context, b *testing.B, cfg *rest.Config, certDir string, port int, opts Options) (*timingServer, chan error) {
	b.Helper()
	timing := &timingServer{Server: webhook.NewServer(webhook.Options{
		Host: "127.0.0.1", Port: port, CertDir: certDir})}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsserver.Options{BindAddress: "0"},
		Controller:    config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: timing,
	})
	if err != nil {
		b.Fatal(err)
	}
	registry, err := setup(mgr, opts)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	if err := awaitWebhook(registry, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
		b.Fatal(err)
	}
	return timing, done
}

// startFloorWebhooks starts, on port, the floor of BenchmarkAdmission: a webhook server on the
// same paths whose mutating webhook answers each call with a JSON patch, made before the clock
// starts, that sets the next address of the default pool, and whose retry and validating
// webhooks allow at once. It reads nothing and claims nothing: what is left is what every
// webhook call costs on this machine (TLS, the AdmissionReview's decoding and encoding, the
// wait for a CPU). It stops when ctx ends, then done receives.
func startFloorWebhooks(ctx context.Context, b *testing.B, certDir string, port int) (*timingServer, chan error) {
	b.Helper()
	patches := make([][]jsonpatch.Operation, 2*admissionServices)
	first := netip.MustParsePrefix(testenv.ServiceClusterIPRange).Addr().Next().Next()
	for i, ip := 0, first; i < len(patches); i, ip = i+1, ip.Next() {
		patches[i] = []jsonpatch.Operation{
			jsonpatch.NewOperation("add", "/spec/clusterIP", ip.String()),
			jsonpatch.NewOperation("add", "/spec/clusterIPs", []string{ip.String()})}
	}
	var next atomic.Int64
	mutate := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Patched("", patches[int(next.Add(1)-1)%len(patches)]...)
	})
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})
	timing := &timingServer{Server: webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir})}
	timing.Register(MutatePath, &webhook.Admission{Handler: mutate})
	timing.Register(MutateRetryPath, &webhook.Admission{Handler: allow})
	timing.Register(ValidatePath, &webhook.Admission{Handler: allow})
	done := make(chan error, 1)
	go func() { done <- timing.Start(ctx) }()
	if err := controlplane.AwaitTLS(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Minute); err != nil {
		b.Fatal(err)
	}
	return timing, done
}

func freeLocalPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// awaitWebhook waits until the pools mirror the cluster, the stash holds its idle entries (the
// webhook has been up a moment when a burst comes) and the webhook server accepts TLS.
func awaitWebhook(registry *Registry, addr string) error {
	deadline := time.Now().Add(time.Minute)
	select {
	case <-registry.Ready():
	case <-time.After(time.Until(deadline)):
		return fmt.Errorf("ClusterIP pools not ready after a minute")
	}
	for ready, _ := registry.Stashed(); ready < stashMinSize; ready, _ = registry.Stashed() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the stash holds %d ready addresses after a minute, want %d", ready, stashMinSize)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return controlplane.AwaitTLS(addr, time.Until(deadline))
}

// The client process of BenchmarkAdmission: this test binary, started again with these
// variables set, creates the Services and prints how many creates failed.
const (
	admissionClientsKubeconfigEnv = "KUBE_CLUSTERIP_ADMISSION_CLIENTS_KUBECONFIG"
	admissionClientsNamespaceEnv  = "KUBE_CLUSTERIP_ADMISSION_CLIENTS_NAMESPACE"
)

func TestMain(m *testing.M) {
	if kubeconfig := os.Getenv(admissionClientsKubeconfigEnv); kubeconfig != "" {
		os.Exit(runAdmissionClients(kubeconfig, os.Getenv(admissionClientsNamespaceEnv)))
	}
	os.Exit(m.Run())
}

// createInClientProcess creates the benchmark's Services from a process of their own and
// returns how many creates failed. In the webhooks' process, 50 clients encoding requests
// and decoding answers would hold the CPUs the handlers are timed on (Go does not preempt a
// goroutine for 10 ms); in a cluster, the clients are never in the webhook's process.
func createInClientProcess(b *testing.B, kubeconfig, ns string) int {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), admissionClientsKubeconfigEnv+"="+kubeconfig, admissionClientsNamespaceEnv+"="+ns)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("client process: %v", err)
	}
	failed, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		b.Fatalf("client process printed %q, want the count of failed creates", out)
	}
	return failed
}

// runAdmissionClients is the client process: it creates the Services and prints how many
// creates failed; its exit code says whether it could run at all.
func runAdmissionClients(kubeconfig, ns string) int {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.QPS, cfg.Burst = -1, 0 // the clients are not what we measure
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(createConcurrently(context.Background(), c, ns))
	return 0
}

// createConcurrently creates admissionServices one-port Services in ns from admissionClients
// clients and returns how many creates failed.
func createConcurrently(ctx context.Context, c client.Client, ns string) int {
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := 0
	for range admissionClients {
		wg.Go(func() {
			for i := range work {
				if err := c.Create(ctx, newService(ns, fmt.Sprintf("svc-%04d", i))); err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		})
	}
	for i := range admissionServices {
		work <- i
	}
	close(work)
	wg.Wait()
	return errs
}

// deniedAdmissions counts webhook answers with allowed=false so far.
func deniedAdmissions(b *testing.B) int {
	families, err := metrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	denied := 0
	for _, f := range families {
		if f.GetName() != "clusterip_webhook_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "allowed" && l.GetValue() == "false" {
					denied += int(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return denied
}

// distinctClusterIPs counts the distinct ClusterIPs inside the default pool's 10.96.0.0/12
// that the Services of ns hold.
func distinctClusterIPs(ctx context.Context, b *testing.B, c client.Client, ns string) int {
	list := &corev1.ServiceList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
	pool := netip.MustParsePrefix(testenv.ServiceClusterIPRange)
	ips := map[netip.Addr]bool{}
	for _, svc := range list.Items {
		if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && pool.Contains(ip) {
			ips[ip] = true
		}
	}
	return len(ips)
}

// timingServer is the manager's webhook server with the time of each request inside its
// handler recorded per path.
type timingServer struct {
	webhook.Server
	mu    sync.Mutex
	spent map[string][]time.Duration
}

func (s *timingServer) Register(path string, hook http.Handler) {
	s.Server.Register(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		hook.ServeHTTP(w, r)
		spent := time.Since(start)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.spent == nil {
			s.spent = map[string][]time.Duration{}
		}
		s.spent[path] = append(s.spent[path], spent)
	}))
}

func (s *timingServer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spent = nil
}

func (s *timingServer) durations(path string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spent[path])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	return sorted[min(len(sorted)-1, (len(sorted)*p+99)/100-1)]
}
