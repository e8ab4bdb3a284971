//go:build upstreamdiff

package upstreamdiff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/ipam"
	"github.com/kube-clusterip/kube-clusterip/test/controlplane"
	"github.com/kube-clusterip/kube-clusterip/test/kit"
	"github.com/kube-clusterip/kube-clusterip/test/testenv"
)

// TestSameServicesAsKubeAPIServer makes the same Service requests of a plain kube-apiserver, which
// assigns ClusterIPs itself, and of one whose ClusterIPs our webhooks assign, on a single-stack, a
// dual-stack and a small cluster (a range of 14 addresses, to fill). After each request it
// compares what clients see: whether the request was granted, the Service it left (families,
// policy, ClusterIPs: the requested ones as written, assigned ones by family), or the refusal's
// status and causes (ours may explain more after upstream's words); before each create, what
// kubectl create --dry-run=server prints.
//
//	make test-upstream-diff
func TestSameServicesAsKubeAPIServer(t *testing.T) {
	controlplane.DiscardLogs()
	clusters := []struct {
		name, serviceRange string
		cases              []serviceCase
	}{
		{"single-stack", controlplane.ServiceClusterIPRange, serviceCases()},
		{"dual-stack", controlplane.DualStackServiceClusterIPRange, serviceCases()},
		{"small", "10.96.0.0/28", []serviceCase{fillCase()}},
	}
	for _, cluster := range clusters {
		t.Run(cluster.name, func(t *testing.T) {
			logs := t.TempDir()
			if dir := os.Getenv("UPSTREAMDIFF_LOGS"); dir != "" {
				logs = filepath.Join(dir, cluster.name)
				must(t, os.MkdirAll(logs, 0o755))
			}
			up := startServiceSide(t, logs, "upstream", cluster.serviceRange, false)
			ours := startServiceSide(t, logs, "ours", cluster.serviceRange, true)
			ctx := context.Background()
			for _, sc := range cluster.cases {
				for _, side := range []serviceSide{up, ours} {
					must(t, side.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sc.name}}))
				}
				for i, step := range sc.steps {
					var upDryRun, ourDryRun string
					if step.object != nil {
						upDryRun, ourDryRun = kubectlDryRun(t, up, step.object, sc.name), kubectlDryRun(t, ours, step.object, sc.name)
					}
					want := serviceOutcomeOf(step.do(ctx, up.c, sc.name))
					got := serviceOutcomeOf(step.do(ctx, ours.c, sc.name))
					if diff := want.differs(got); diff != "" {
						t.Errorf("%s, step %d: %s\n  upstream: %s\n  ours:     %s", sc.name, i+1, diff, want, got)
					} else if want.message != got.message {
						t.Logf("%s, step %d: %s\n  ours, in other words: %s", sc.name, i+1, want, got)
					} else {
						t.Logf("%s, step %d: %s", sc.name, i+1, want)
					}
					diff := kubectlDiffers(upDryRun, ourDryRun)
					switch {
					case diff == "":
					case !want.foretold(upDryRun) && got.foretold(ourDryRun):
						// kube-apiserver's dry run checks less than its create (it grants a held
						// address); ours answers as the create does (see README, Deliberate differences).
						t.Logf("%s, step %d: kubectl create --dry-run=server: upstream's dry run is not its create, ours is", sc.name, i+1)
					case !got.refused && apiServerDryRunRange(ourDryRun):
						// After our webhooks, kube-apiserver's dry run checks a requested address
						// against the range of one of its ServiceCIDRs picked at random (its
						// MetaAllocator.DryRun): with a second ServiceCIDR it may refuse, on either
						// side, an address its create then grants.
						t.Logf("%s, step %d: kubectl create --dry-run=server: kube-apiserver's dry run checked another ServiceCIDR's range", sc.name, i+1)
					default:
						t.Errorf("%s, step %d, kubectl create --dry-run=server: %s\n  upstream: %s\n  ours:     %s", sc.name, i+1, diff, upDryRun, ourDryRun)
					}
				}
			}
		})
	}
}

// serviceSide is a control plane of the comparison: a client, and a kubeconfig for kubectl.
type serviceSide struct {
	c          client.Client
	kubeconfig string
}

// startServiceSide starts a control plane with serviceRange and, for ours, the ClusterIP
// assignment controllers and their webhooks, and returns it once ours is ready.
func startServiceSide(t *testing.T, logs, name, serviceRange string, withOurs bool) serviceSide {
	log, err := os.Create(filepath.Join(logs, name+"-control-plane.log"))
	must(t, err)
	env := controlplane.New(os.Getenv("KUBEBUILDER_ASSETS"), log)
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", serviceRange)
	if withOurs {
		testenv.WithWebhooks(env)
	}
	cfg, err := env.Start()
	must(t, err)
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop the %s control plane: %v", name, err)
		}
	})
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	must(t, err)
	side := serviceSide{c: c, kubeconfig: filepath.Join(logs, name+".kubeconfig")}
	_, err = controlplane.WriteAdminKubeconfig(env, "admin", side.kubeconfig)
	must(t, err)
	if !withOurs {
		return side
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: testenv.WebhookServer(env), Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	must(t, err)
	must(t, ipam.SetupWithManager(mgr, ipam.Options{}))
	runManager(t, mgr)
	must(t, controlplane.AwaitTLS(testenv.WebhookAddress(env), time.Minute))
	// Ready once the pools mirror the cluster: from then on the webhook assigns.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		var pool ipamv1alpha1.ClusterIPPool
		if c.Get(context.Background(), client.ObjectKey{Name: ipamv1alpha1.DefaultPoolName}, &pool) == nil &&
			pool.Status.ObservedGeneration == pool.Generation && readyCondition(pool.Status.Conditions) {
			return side
		}
		if time.Now().After(deadline) {
			t.Fatalf("the default pool is not Ready after a minute (logs in %s)", logs)
		}
	}
}

func readyCondition(conditions []metav1.Condition) bool {
	for _, c := range conditions {
		if c.Type == ipamv1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// A serviceStep makes one request in namespace ns and returns the Service it left, or the error.
type serviceStep struct {
	do func(ctx context.Context, c client.Client, ns string) (*corev1.Service, error)
	// object is the Service a create step creates; kubectl creates it with --dry-run=server first.
	object *corev1.Service
}

type serviceCase struct {
	name  string
	steps []serviceStep
}

func createService(svc *corev1.Service, opts ...client.CreateOption) serviceStep {
	return serviceStep{object: svc, do: func(ctx context.Context, c client.Client, ns string) (*corev1.Service, error) {
		svc := svc.DeepCopy()
		svc.Namespace = ns
		return svc, c.Create(ctx, svc, opts...)
	}}
}

func updateService(name string, change func(*corev1.Service)) serviceStep {
	return serviceStep{do: func(ctx context.Context, c client.Client, ns string) (*corev1.Service, error) {
		svc := &corev1.Service{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
			return nil, err
		}
		change(svc)
		return svc, c.Update(ctx, svc)
	}}
}

// serviceCIDRStep changes the cluster's ServiceCIDRs, then waits until the side (its API server
// and, for ours, our webhooks, each watching them) grants a Service probeIP (a dry run, then a
// create), or refuses its create when !granted: the steps after compare the state the change
// leads to, not how fast each side learns of it.
func serviceCIDRStep(change func(ctx context.Context, c client.Client) error, probeIP string, granted bool) serviceStep {
	return serviceStep{do: func(ctx context.Context, c client.Client, ns string) (*corev1.Service, error) {
		if err := change(ctx, c); err != nil {
			return nil, err
		}
		for attempt := 0; ; attempt++ {
			probe := kit.MakeService(fmt.Sprintf("probe-%d", attempt), ns).TCPPort("http", 80, 8080).ClusterIP(probeIP).Obj()
			var err error
			if granted { // its dry runs lag behind its creates: kubectl's of the next step must see it too
				err = c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
			}
			if err == nil {
				err = c.Create(ctx, probe)
			}
			if err == nil {
				if err := c.Delete(ctx, probe); err != nil {
					return nil, err
				}
			}
			if (err == nil) == granted {
				return nil, nil
			}
			if attempt == 300 && err == nil {
				return nil, fmt.Errorf("probe %s: still granted after a minute", probeIP)
			}
			if attempt == 300 {
				return nil, fmt.Errorf("probe %s: still refused after a minute: %w", probeIP, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}}
}

func deleteService(name string) serviceStep {
	return serviceStep{do: func(ctx context.Context, c client.Client, ns string) (*corev1.Service, error) {
		return nil, c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	}}
}

// kubectlDryRun runs kubectl create --dry-run=server with svc in namespace ns, as a user would
// try a manifest, and returns what it printed (addresses as shownIP shows them) with its exit
// status.
func kubectlDryRun(t *testing.T, side serviceSide, svc *corev1.Service, ns string) string {
	obj := svc.DeepCopy()
	obj.APIVersion, obj.Kind, obj.Namespace = "v1", "Service", ns
	manifest, err := json.Marshal(obj)
	must(t, err)
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "--kubeconfig", side.kubeconfig,
		"create", "--dry-run=server", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	status := "exit 0"
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		status = fmt.Sprintf("exit %d", exitErr.ExitCode())
	} else if err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	return status + "\n" + shownIPsIn(strings.TrimSpace(string(out)))
}

// kubectlDiffers says how kubectl's output for ours differs from upstream's, or "": each line of
// ours must begin with upstream's line (ours may explain more after upstream's words).
func kubectlDiffers(upstream, ours string) string {
	up, our := strings.Split(upstream, "\n"), strings.Split(ours, "\n")
	if len(up) != len(our) {
		return "another number of lines"
	}
	for i := range up {
		if !strings.HasPrefix(our[i], up[i]) {
			return fmt.Sprintf("line %d is not upstream's", i+1)
		}
	}
	return ""
}

// Requested addresses: printed as they are in outcomes, where assigned ones print as their family.
// The IPv6 ones lie in the range's static band (its first 256 addresses), which dynamic
// allocation on both sides leaves alone while the rest has room: an address it hands out there
// would print as requested on one side only. The IPv4 range is 4096 times larger than its /24.
var requested = []netip.Prefix{netip.MustParsePrefix("10.96.100.0/24"), netip.MustParsePrefix("fd00:10:96::/120"),
	netip.MustParsePrefix("10.250.0.0/24")}

func serviceCases() []serviceCase {
	svc := func(name string) *kit.ServiceWrapper {
		return kit.MakeService(name, "").Selector(map[string]string{"app": name}).TCPPort("http", 80, 8080)
	}
	withIPs := func(w *kit.ServiceWrapper, policy *corev1.IPFamilyPolicy, ips ...string) *corev1.Service {
		s := w.Obj()
		s.Spec.IPFamilyPolicy = policy
		if len(ips) > 0 {
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips
		}
		return s
	}
	policy := func(p corev1.IPFamilyPolicy, families ...corev1.IPFamily) *corev1.Service {
		s := svc("s").Obj()
		s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = ptr.To(p), families
		return s
	}
	single, prefer, require := corev1.IPFamilyPolicySingleStack, corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	return []serviceCase{
		{name: "defaults", steps: []serviceStep{createService(svc("s").Obj())}},
		{name: "requested", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.96.100.10"))}},
		{name: "requested-taken", steps: []serviceStep{
			createService(withIPs(svc("a"), nil, "10.96.100.11")),
			createService(withIPs(svc("b"), nil, "10.96.100.11")),
		}},
		{name: "generated-name-taken", steps: []serviceStep{
			createService(withIPs(svc("a"), nil, "10.96.100.25")),
			createService(withIPs(svc("").Mutate(func(s *corev1.Service) { s.GenerateName = "g-" }), nil, "10.96.100.25")),
		}},
		{name: "requested-kubernetes", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.96.0.1"))}},
		{name: "requested-outside", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.200.0.10"))}},
		{name: "requested-network", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.96.0.0"))}},
		{name: "requested-broadcast", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.111.255.255"))}},
		{name: "requested-invalid", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.96.100.300"))}},
		{name: "requested-mismatch", steps: []serviceStep{createService(func() *corev1.Service {
			s := withIPs(svc("s"), nil, "10.96.100.12")
			s.Spec.ClusterIPs = []string{"10.96.100.13"}
			return s
		}())}},
		{name: "requested-ips-only", steps: []serviceStep{createService(func() *corev1.Service {
			s := svc("s").Obj()
			s.Spec.ClusterIPs = []string{"10.96.100.14"}
			return s
		}())}},
		{name: "headless", steps: []serviceStep{createService(withIPs(svc("s"), nil, corev1.ClusterIPNone))}},
		{name: "headless-require", steps: []serviceStep{createService(withIPs(svc("s"), ptr.To(require), corev1.ClusterIPNone))}},
		{name: "headless-selectorless-prefer", steps: []serviceStep{createService(func() *corev1.Service {
			s := withIPs(svc("s"), ptr.To(prefer), corev1.ClusterIPNone)
			s.Spec.Selector = nil
			return s
		}())}},
		{name: "single-v6", steps: []serviceStep{createService(policy(single, v6))}},
		{name: "prefer", steps: []serviceStep{createService(policy(prefer))}},
		{name: "prefer-v6-first", steps: []serviceStep{createService(policy(prefer, v6))}},
		{name: "require", steps: []serviceStep{createService(policy(require))}},
		{name: "require-v6-v4", steps: []serviceStep{createService(policy(require, v6, v4))}},
		{name: "two-families-no-policy", steps: []serviceStep{createService(func() *corev1.Service {
			s := svc("s").Obj()
			s.Spec.IPFamilies = []corev1.IPFamily{v4, v6}
			return s
		}())}},
		{name: "single-two-families", steps: []serviceStep{createService(policy(single, v4, v6))}},
		{name: "requested-dual", steps: []serviceStep{createService(withIPs(svc("s"), ptr.To(require), "10.96.100.15", "fd00:10:96::15"))}},
		{name: "requested-dual-no-policy", steps: []serviceStep{createService(withIPs(svc("s"), nil, "10.96.100.16", "fd00:10:96::16"))}},
		{name: "requested-v6", steps: []serviceStep{createService(withIPs(svc("s"), nil, "fd00:10:96::17"))}},
		{name: "requested-family-mismatch", steps: []serviceStep{createService(func() *corev1.Service {
			s := withIPs(svc("s"), ptr.To(single), "10.96.100.18")
			s.Spec.IPFamilies = []corev1.IPFamily{v6}
			return s
		}())}},
		{name: "nodeport", steps: []serviceStep{createService(svc("s").Mutate(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }).Obj())}},
		{name: "externalname-with-ip", steps: []serviceStep{createService(func() *corev1.Service {
			s := kit.MakeService("s", "").ExternalName("example.com").Obj()
			s.Spec.ClusterIP = "10.96.100.19"
			return s
		}())}},
		{name: "dry-run", steps: []serviceStep{
			createService(withIPs(svc("s"), nil, "10.96.100.20"), client.DryRunAll),
			createService(withIPs(svc("s"), nil, "10.96.100.20")),
		}},
		{name: "change-ip", steps: []serviceStep{
			createService(svc("s").Obj()),
			updateService("s", func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.100.21", []string{"10.96.100.21"}
			}),
		}},
		{name: "unset-ip", steps: []serviceStep{
			createService(withIPs(svc("s"), nil, "10.96.100.22")),
			updateService("s", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }),
		}},
		{name: "upgrade", steps: []serviceStep{
			createService(svc("s").Obj()),
			updateService("s", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = ptr.To(require) }),
		}},
		{name: "upgrade-prefer", steps: []serviceStep{
			createService(svc("s").Obj()),
			updateService("s", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = ptr.To(prefer) }),
		}},
		{name: "downgrade", steps: []serviceStep{
			createService(policy(require)),
			updateService("s", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = ptr.To(single) }),
			updateService("s", func(s *corev1.Service) {
				s.Spec.ClusterIPs, s.Spec.IPFamilies = s.Spec.ClusterIPs[:1], s.Spec.IPFamilies[:1]
			}),
		}},
		{name: "upgrade-requested", steps: []serviceStep{
			createService(withIPs(svc("s"), nil, "10.96.100.26")),
			updateService("s", func(s *corev1.Service) {
				s.Spec.IPFamilyPolicy = ptr.To(require)
				s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, "fd00:10:96::26")
			}),
		}},
		{name: "swap-families", steps: []serviceStep{
			createService(policy(prefer)),
			updateService("s", func(s *corev1.Service) {
				slices.Reverse(s.Spec.IPFamilies)
				slices.Reverse(s.Spec.ClusterIPs)
				s.Spec.ClusterIP = s.Spec.ClusterIPs[0]
			}),
		}},
		{name: "from-externalname-taken", steps: []serviceStep{
			createService(withIPs(svc("a"), nil, "10.96.100.27")),
			createService(kit.MakeService("s", "").ExternalName("example.com").Obj()),
			updateService("s", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeClusterIP, ""
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.100.27", []string{"10.96.100.27"}
				s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}}
			}),
		}},
		{name: "loadbalancer", steps: []serviceStep{createService(svc("s").Mutate(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }).Obj())}},
		{name: "to-externalname", steps: []serviceStep{
			createService(svc("s").Obj()),
			updateService("s", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
			}),
		}},
		{name: "from-externalname", steps: []serviceStep{
			createService(kit.MakeService("s", "").ExternalName("example.com").Obj()),
			updateService("s", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeClusterIP, ""
				s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}}
			}),
		}},
		{name: "headless-to-ip", steps: []serviceStep{
			createService(withIPs(svc("s"), nil, corev1.ClusterIPNone)),
			updateService("s", func(s *corev1.Service) {
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.100.23", []string{"10.96.100.23"}
			}),
		}},
		// Last: it adds a ServiceCIDR to the cluster, and deletes it (it stays, being deleted, as
		// no kube-controller-manager removes its finalizer).
		{name: "servicecidr", steps: []serviceStep{
			serviceCIDRStep(func(ctx context.Context, c client.Client) error {
				return c.Create(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"},
					Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.250.0.0/24"}}})
			}, "10.250.0.200", true),
			createService(withIPs(svc("a"), nil, "10.250.0.10")),
			serviceCIDRStep(func(ctx context.Context, c client.Client) error {
				return c.Delete(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"}})
			}, "10.250.0.201", false),
			createService(withIPs(svc("b"), nil, "10.250.0.11")),
			createService(svc("c").Obj()),
		}},
		{name: "reuse-after-delete", steps: []serviceStep{
			createService(withIPs(svc("a"), nil, "10.96.100.24")),
			deleteService("a"),
			createService(withIPs(svc("b"), nil, "10.96.100.24")),
		}},
	}
}

// fillCase creates Services until the range is full (14 addresses, one the kubernetes Service's),
// and one more.
func fillCase() serviceCase {
	sc := serviceCase{name: "fill"}
	for i := range 14 {
		name := fmt.Sprintf("s%d", i)
		sc.steps = append(sc.steps, createService(kit.MakeService(name, "").Selector(map[string]string{"app": name}).TCPPort("http", 80, 8080).Obj()))
	}
	return sc
}

// serviceOutcome is what a request left, as kubectl would show it.
type serviceOutcome struct {
	refused  bool
	code     int32
	reason   metav1.StatusReason
	causes   []metav1.StatusCause
	message  string
	families []corev1.IPFamily
	policy   string
	ips      []string
}

func serviceOutcomeOf(svc *corev1.Service, err error) serviceOutcome {
	if err != nil {
		var status apierrors.APIStatus
		if !errors.As(err, &status) {
			return serviceOutcome{refused: true, message: err.Error()}
		}
		s := status.Status()
		out := serviceOutcome{refused: true, code: s.Code, reason: s.Reason, message: shownIPsIn(s.Message)}
		if s.Details != nil {
			for _, c := range s.Details.Causes {
				c.Message = shownIPsIn(c.Message)
				out.causes = append(out.causes, c)
			}
		}
		return out
	}
	if svc == nil {
		return serviceOutcome{}
	}
	out := serviceOutcome{families: svc.Spec.IPFamilies}
	if svc.Spec.IPFamilyPolicy != nil {
		out.policy = string(*svc.Spec.IPFamilyPolicy)
	}
	for _, ip := range svc.Spec.ClusterIPs {
		out.ips = append(out.ips, shownIP(ip))
	}
	return out
}

// shownIP is ip as written when a request named it, else its family.
func shownIP(ip string) string {
	a, err := netip.ParseAddr(ip)
	switch {
	case err != nil:
		return ip
	case slices.ContainsFunc(requested, func(p netip.Prefix) bool { return p.Contains(a) }):
		return ip
	case a.Is4():
		return "<IPv4>"
	default:
		return "<IPv6>"
	}
}

var addressLike = regexp.MustCompile(`[0-9a-fA-F:.]{2,}`)

// shownIPsIn is text with each address in it as shownIP shows it.
func shownIPsIn(text string) string {
	return addressLike.ReplaceAllStringFunc(text, func(word string) string {
		addr := strings.TrimRight(word, ":.") // "IP 10.96.0.1: provided ..."
		if _, err := netip.ParseAddr(addr); err != nil {
			return word
		}
		return shownIP(addr) + word[len(addr):]
	})
}

func (o serviceOutcome) String() string {
	if o.refused {
		return fmt.Sprintf("refused %d %s: %s", o.code, o.reason, o.message)
	}
	return fmt.Sprintf("granted: families %v, policy %q, ClusterIPs %v", o.families, o.policy, o.ips)
}

// differs says how ours differs from upstream's outcome, or "".
func (o serviceOutcome) differs(ours serviceOutcome) string {
	switch {
	case o.refused != ours.refused:
		return "granted on one side only"
	case !o.refused:
		if o.String() != ours.String() {
			return "a different Service"
		}
	case o.code != ours.code || o.reason != ours.reason:
		return "refused with another status"
	case len(o.causes) != len(ours.causes):
		return "refused with another number of causes"
	case len(o.causes) == 0 && !strings.Contains(ours.message, upstreamReason(o.message)):
		return fmt.Sprintf("our refusal lacks upstream's reason %q", upstreamReason(o.message))
	}
	for i, c := range o.causes {
		// Ours may explain more after upstream's words (the holder, the pool, what to do).
		if ours.causes[i].Field != c.Field || !strings.HasPrefix(ours.causes[i].Message, c.Message) {
			return fmt.Sprintf("cause %d is not upstream's %s: %q", i+1, c.Field, c.Message)
		}
	}
	return ""
}

// foretold says whether kubectl's dry run of a create (kubectlDryRun's output) said what the
// create then did: granted, or refused for the same causes.
func (o serviceOutcome) foretold(dryRun string) bool {
	if !o.refused {
		return strings.HasPrefix(dryRun, "exit 0\n")
	}
	if strings.HasPrefix(dryRun, "exit 0\n") {
		return false
	}
	for _, c := range o.causes {
		if !strings.Contains(dryRun, c.Field+": "+c.Message) {
			return false
		}
	}
	return len(o.causes) > 0 || strings.Contains(dryRun, upstreamReason(o.message))
}

// apiServerDryRunRange says whether kubectl's dry run (kubectlDryRun's output) was refused by
// kube-apiserver's own range check of a requested address, not by a webhook.
func apiServerDryRunRange(dryRun string) bool {
	return !strings.HasPrefix(dryRun, "exit 0\n") && !strings.Contains(dryRun, "admission webhook") &&
		strings.Contains(dryRun, "is not in the valid range. The range of valid IPs is")
}

// upstreamReason is the last clause of an API server's message without causes, what it says
// went wrong (`services "s" not found`).
func upstreamReason(message string) string {
	return message[strings.LastIndex(message, ": ")+2:]
}
