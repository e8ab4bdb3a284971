package diagnose

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// PluginName is the binary name under which kubectl runs us as `kubectl clusterip`.
const PluginName = "kubectl-clusterip"

// Subcommand is the word that selects diagnose: `kube-clusterip diagnose ...`.
const Subcommand = "diagnose"

// IsInvocation says whether a command line asks for diagnose rather than the manager: the binary
// is installed as the kubectl plugin, or its first argument is "diagnose". Main then takes argv[1:].
func IsInvocation(argv []string) bool {
	if len(argv) == 0 {
		return false
	}
	if strings.TrimSuffix(filepath.Base(argv[0]), ".exe") == PluginName {
		return true
	}
	return len(argv) > 1 && argv[1] == Subcommand
}

// Options are the diagnose command line.
type Options struct {
	// ServiceName is the Service to diagnose (from svc/NAME).
	ServiceName string
	// Namespace overrides the kubeconfig context's namespace.
	Namespace     string
	Kubeconfig    string
	Context       string
	As            string
	Output        string
	ClusterDomain string
	// Datapath also checks this node's nftables table; NodeName picks local endpoints.
	Datapath bool
	NodeName string
	// NFT is the nft binary --datapath runs (default "nft" from $PATH).
	NFT string
	// DNS also asks the cluster DNS for the Service's names (--dns).
	DNS        bool
	DNSOptions DNSOptions
}

func usage(program string) string {
	return fmt.Sprintf(`Usage: %[1]s diagnose svc/NAME [-n NAMESPACE] [flags]

Runs the "Service not accessible" checklist for one Service and prints a verdict with evidence:
the Service (ClusterIP and pool, ports, DNS names, environment variables), the pods its selector
matches and nearly matches, readiness, targetPorts, Endpoints and EndpointSlices, and with
--datapath this node's nftables table. Exit status: 0 healthy, 1 a problem was found, 2 usage or
access error.

Flags:
  -n, --namespace NS      namespace of the Service (default: the kubeconfig context's)
      --kubeconfig FILE   kubeconfig (default: $KUBECONFIG, then ~/.kube/config)
      --context NAME      kubeconfig context to use
      --as USER           impersonate USER
  -o, --output FORMAT     text (default) or json
      --cluster-domain D  the cluster's DNS domain (default cluster.local)
      --datapath          also check this node's nftables table (run on the node, as root)
      --node-name NAME    this node's name for --datapath (default $NODE_NAME, then the hostname)
      --nft PATH          the nft binary --datapath runs (default nft from $PATH)
      --dns               also ask the cluster DNS for the Service's names and compare the answers
      --dns-service NS/N  the cluster DNS Service (default kube-system/kube-dns)
      --dns-server H:P    ask this address instead of the DNS Service's ClusterIP:53
      --from-namespace NS resolve the short name as a pod of NS would (default: the Service's)
`, program)
}

func programName() string {
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == PluginName {
		return "kubectl clusterip"
	}
	return "kube-clusterip"
}

// ParseArgs reads the command line after the program name: "diagnose", one svc/NAME, and flags
// before or after it. It returns flag.ErrHelp for -h.
func ParseArgs(args []string) (*Options, error) {
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		return nil, flag.ErrHelp
	}
	if len(args) == 0 || args[0] != Subcommand {
		return nil, fmt.Errorf("expected the subcommand %q", Subcommand)
	}
	o := &Options{}
	fs := flag.NewFlagSet(Subcommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"n", "namespace"} {
		fs.StringVar(&o.Namespace, name, "", "")
	}
	for _, name := range []string{"o", "output"} {
		fs.StringVar(&o.Output, name, "text", "")
	}
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&o.Context, "context", "", "")
	fs.StringVar(&o.As, "as", "", "")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", DefaultClusterDomain, "")
	fs.BoolVar(&o.Datapath, "datapath", false, "")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "")
	fs.StringVar(&o.NFT, "nft", "nft", "")
	fs.BoolVar(&o.DNS, "dns", false, "")
	fs.StringVar(&o.DNSOptions.Service, "dns-service", "", "")
	fs.StringVar(&o.DNSOptions.Server, "dns-server", "", "")
	fs.StringVar(&o.DNSOptions.FromNamespace, "from-namespace", "", "")
	var targets []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		targets, rest = append(targets, rest[0]), rest[1:]
	}
	if len(targets) != 1 {
		return nil, fmt.Errorf("name one Service as svc/NAME (got %d arguments)", len(targets))
	}
	kind, name, hasKind := strings.Cut(targets[0], "/")
	if !hasKind {
		kind, name = "svc", targets[0]
	}
	if kind != "svc" && kind != "service" && kind != "services" || name == "" {
		return nil, fmt.Errorf("%q is not a Service: name it svc/NAME", targets[0])
	}
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return nil, fmt.Errorf("%q is not a valid Service name, so no DNS name can reach it: %s", name, strings.Join(errs, "; "))
	}
	if err := ValidateDNSOptions(o.DNSOptions); err != nil {
		return nil, err
	}
	if o.Output != "text" && o.Output != "json" {
		return nil, fmt.Errorf("-o %s: the output is text or json", o.Output)
	}
	o.ServiceName = name
	return o, nil
}

// Main runs `diagnose` with the command line after the program name ("diagnose", svc/NAME,
// flags), writes the verdict to stdout and errors to stderr, and returns the exit status: 0
// healthy, 1 a problem found, 2 a usage or access error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := ParseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage(programName()))
		return ExitHealthy
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n\n%s", err, usage(programName()))
		return ExitError
	}
	report, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return ExitError
	}
	if o.Output == "json" {
		err = WriteJSON(stdout, report)
	} else {
		err = WriteText(stdout, report)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: write the report: %v\n", err)
		return ExitError
	}
	return report.ExitCode()
}

// Run connects through the kubeconfig the options name, reads what the diagnosis needs and
// returns its report. Errors are usage or access errors (exit status 2).
func Run(ctx context.Context, o *Options) (*Report, error) {
	cfg, namespace, err := LoadKubeconfig(o)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("connect to the API server %s: %w", cfg.Host, err)
	}
	in, err := Gather(ctx, c, namespace, o.ServiceName)
	if errors.Is(err, errServiceNotFound) {
		return ServiceNotFound(namespace, o.ServiceName, namespaceExists(ctx, c, namespace), sameNameElsewhere(ctx, c, namespace, o.ServiceName)), nil
	}
	if err != nil {
		return nil, err
	}
	in.ClusterDomain = o.ClusterDomain
	if o.Datapath {
		if in.NodeName, err = nodeName(o); err != nil {
			return nil, err
		}
		// The zone only matters for Services with topology hints; a Node we may not read
		// leaves it empty, as the node agent would until it can.
		node := &corev1.Node{}
		if c.Get(ctx, client.ObjectKey{Name: in.NodeName}, node) == nil {
			in.NodeZone = node.Labels[corev1.LabelTopologyZone]
		}
		table, missing, err := ReadNodeTable(ctx, o.NFT, in.Service)
		if err != nil {
			return nil, err
		}
		if len(missing) == 0 {
			in.NodeTable = table
		}
		for _, family := range missing {
			in.ReadFindings = append(in.ReadFindings, Finding{Severity: Problem, Check: CheckDatapath,
				Message: fmt.Sprintf("node %s has no nftables table %s %s: no ClusterIP works from this node", in.NodeName, family, NFTTableName),
				Fix:     "run the node agent on this node (kube-clusterip --datapath, the DaemonSet in config/)"})
		}
	}
	report := Diagnose(*in)
	if o.DNS {
		dnsFindings, err := RunDNSCheck(ctx, c, in, o.DNSOptions)
		if err != nil {
			return nil, err
		}
		report = finish(report, append(report.Findings, dnsFindings...))
	}
	return report, nil
}

// Scheme knows the objects diagnose reads: core, discovery and ClusterIPPools.
func Scheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
	return scheme
}

// LoadKubeconfig resolves the client config as kubectl does (--kubeconfig, $KUBECONFIG,
// ~/.kube/config; --context; --as) and the namespace (-n, else the context's, else default).
func LoadKubeconfig(o *Options) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	overrides.AuthInfo.Impersonate = o.As
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load the kubeconfig: %w", err)
	}
	namespace := o.Namespace
	if namespace == "" {
		if namespace, _, err = loader.Namespace(); err != nil {
			return nil, "", fmt.Errorf("read the namespace of the kubeconfig context: %w", err)
		}
	}
	return cfg, namespace, nil
}

var errServiceNotFound = errors.New("service not found")

// Gather reads the Service and what its diagnosis needs. Reads the checklist cannot do without
// (the Service, its namespace's pods, Endpoints, EndpointSlices) fail with an access error; the
// optional ones (pods elsewhere, ClusterIPPools) become findings when RBAC forbids them.
func Gather(ctx context.Context, c client.Reader, namespace, name string) (*Inputs, error) {
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, svc); apierrors.IsNotFound(err) {
		return nil, errServiceNotFound
	} else if err != nil {
		return nil, readError(err, "services", namespace)
	}
	in := &Inputs{Service: svc}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(namespace)); err != nil {
		return nil, readError(err, "pods", namespace)
	}
	in.Pods = pointers(pods.Items)
	if endpointrules.HasSelector(svc) && len(endpointrules.SelectedPods(svc, in.Pods)) == 0 {
		elsewhere := &corev1.PodList{}
		if err := c.List(ctx, elsewhere, client.MatchingLabels(svc.Spec.Selector)); err != nil {
			in.ReadFindings = append(in.ReadFindings, skippedRead(CheckSelector, "look for matching pods in other namespaces", err))
		}
		in.PodsElsewhere = PodsInOtherNamespaces(svc, pointers(elsewhere.Items))
	}
	ep := &corev1.Endpoints{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, ep); err == nil {
		in.Endpoints = ep
	} else if !apierrors.IsNotFound(err) {
		return nil, readError(err, "endpoints", namespace)
	}
	slices := &discoveryv1.EndpointSliceList{}
	if err := c.List(ctx, slices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return nil, readError(err, "endpointslices.discovery.k8s.io", namespace)
	}
	in.EndpointSlices = pointers(slices.Items)
	pools := &ipamv1alpha1.ClusterIPPoolList{}
	switch err := c.List(ctx, pools); {
	case err == nil:
		in.Pools = pointers(pools.Items)
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		// No ClusterIPPool CRD: the API server's own range assigns ClusterIPs.
	default:
		in.ReadFindings = append(in.ReadFindings, skippedRead(CheckPool, "read ClusterIPPools (the pool of the ClusterIP is unknown)", err))
	}
	return in, nil
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// sameNameElsewhere lists the namespaces holding a Service of that name; best effort.
func sameNameElsewhere(ctx context.Context, c client.Reader, namespace, name string) []string {
	services := &corev1.ServiceList{}
	if err := c.List(ctx, services, client.MatchingFields{"metadata.name": name}); err != nil {
		return nil
	}
	var namespaces []string
	for _, s := range services.Items {
		if s.Namespace != namespace {
			namespaces = append(namespaces, s.Namespace)
		}
	}
	return namespaces
}

// namespaceExists says whether the namespace exists; when its read fails, it assumes so.
func namespaceExists(ctx context.Context, c client.Reader, namespace string) bool {
	err := c.Get(ctx, client.ObjectKey{Name: namespace}, &corev1.Namespace{})
	return !apierrors.IsNotFound(err)
}

// readError turns a failed read into an error that says what to do, RBAC first.
func readError(err error, resource, namespace string) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("RBAC forbids reading %s in namespace %s: %w\n"+
			"  fix: ask for a Role in %s granting get and list on %s (diagnose reads services, pods, endpoints and endpointslices), or use a kubeconfig or --context that has it",
			resource, namespace, err, namespace, resource)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server rejected the kubeconfig's credentials (reading %s): %w", resource, err)
	}
	return fmt.Errorf("read %s in namespace %s: %w", resource, namespace, err)
}

func skippedRead(check, what string, err error) Finding {
	reason := err.Error()
	if apierrors.IsForbidden(err) {
		reason = "RBAC forbids it"
	}
	return Finding{Severity: Warning, Check: check, Message: "could not " + what + ": " + reason,
		Fix: "run with a kubeconfig allowed to list cluster-wide for the full checklist"}
}

func nodeName(o *Options) (string, error) {
	if o.NodeName != "" {
		return o.NodeName, nil
	}
	name, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("--datapath needs --node-name (or $NODE_NAME): %w", err)
	}
	return name, nil
}

// ReadNodeTable lists this node's table with `nft -j` (the nft binary given) for each IP family of
// the Service and returns it with the families whose table does not exist. It only reads: it never
// modifies nftables.
func ReadNodeTable(ctx context.Context, nft string, svc *corev1.Service) (*NodeTable, []string, error) {
	table := NewNodeTable()
	var missing []string
	families := map[string]bool{}
	for _, ip := range clusterIPs(svc) {
		if strings.Contains(ip, ":") {
			families["ip6"] = true
		} else {
			families["ip"] = true
		}
	}
	for _, family := range sortedKeysOf(families) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, nft, "-j", "list", "table", family, NFTTableName)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			if strings.Contains(stderr.String(), "No such file or directory") {
				missing = append(missing, family)
				continue
			}
			return nil, nil, fmt.Errorf("list the nftables table %s %s (run on the node as root, with nft installed): %w: %s", family, NFTTableName, err, strings.TrimSpace(stderr.String()))
		}
		if err := table.AddNFTJSON(stdout.Bytes()); err != nil {
			return nil, nil, err
		}
	}
	return table, missing, nil
}
