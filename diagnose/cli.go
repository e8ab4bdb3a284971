package diagnose

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"slices"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/knftables"

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
	// ConfigFlags are kubectl's flags for reaching the cluster: --kubeconfig, --context,
	// -n/--namespace, --server, --as, --token, TLS and the rest.
	ConfigFlags *genericclioptions.ConfigFlags
	// Output is text, json or yaml.
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

// Output formats of -o.
var outputFormats = []string{"text", "json", "yaml"}

// usageError is a command line diagnose cannot run: exit status 2, with a pointer to --help.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func displayName() string {
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == PluginName {
		return "kubectl clusterip"
	}
	return "kube-clusterip"
}

// NewCommand is the command tree: the program (kubectl clusterip, or kube-clusterip) and its
// diagnose subcommand. run is called with the parsed options.
func NewCommand(streams genericiooptions.IOStreams, run func(*cobra.Command, *Options) error) *cobra.Command {
	program := displayName()
	root := &cobra.Command{
		Use:           strings.ReplaceAll(program, " ", "-"),
		Short:         "Explain why a ClusterIP Service does or does not work",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: program},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o := &Options{ConfigFlags: genericclioptions.NewConfigFlags(true)}
	cmd := &cobra.Command{
		Use:   Subcommand + " svc/NAME [-n NAMESPACE] [flags]",
		Short: `Run the "Service not accessible" checklist for one Service`,
		Long: `Runs the "Service not accessible" checklist for one Service and prints a verdict with
evidence: the Service (ClusterIP and pool, ports, DNS names, environment variables), the pods its
selector matches and nearly matches, readiness, targetPorts, Endpoints and EndpointSlices, and with
--datapath this node's nftables table, with --dns what the cluster DNS answers for its names.

Exit status: 0 healthy, 1 a problem was found, 2 usage or access error.`,
		Example: fmt.Sprintf(`  # Diagnose Service backend in namespace shop
  %[1]s diagnose svc/backend -n shop

  # The same report as YAML or JSON, for scripts
  %[1]s diagnose svc/backend -n shop -o yaml

  # On a node, as root: also compare the node's nftables table with the EndpointSlices
  %[1]s diagnose svc/backend -n shop --datapath

  # Also ask the cluster DNS (kube-system/kube-dns) for its names, as a pod of namespace web would
  %[1]s diagnose svc/backend -n shop --dns --from-namespace web`, program),
		Args: func(_ *cobra.Command, args []string) error {
			name, err := serviceName(args)
			if err != nil {
				return usageError{err}
			}
			o.ServiceName = name
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(outputFormats, o.Output) {
				return usageError{fmt.Errorf("-o %s: the output is text, json or yaml", o.Output)}
			}
			if err := ValidateDNSOptions(o.DNSOptions); err != nil {
				return usageError{err}
			}
			return run(cmd, o)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetFlagErrorFunc(cmd.FlagErrorFunc())
	o.ConfigFlags.AddFlags(cmd.Flags())
	cmd.Flags().StringVarP(&o.Output, "output", "o", "text", "output format: "+strings.Join(outputFormats, ", "))
	cmd.Flags().StringVar(&o.ClusterDomain, "cluster-domain", DefaultClusterDomain, "the cluster's DNS domain")
	cmd.Flags().BoolVar(&o.Datapath, "datapath", false, "also check this node's nftables table (run on the node, as root)")
	cmd.Flags().StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name for --datapath (default $NODE_NAME, then the hostname)")
	cmd.Flags().StringVar(&o.NFT, "nft", "nft", "the nft binary --datapath runs")
	cmd.Flags().BoolVar(&o.DNS, "dns", false, "also ask the cluster DNS for the Service's names and compare the answers with the API")
	cmd.Flags().StringVar(&o.DNSOptions.Service, "dns-service", "", "the cluster DNS Service as NAMESPACE/NAME (default "+DefaultDNSService+")")
	cmd.Flags().StringVar(&o.DNSOptions.Server, "dns-server", "", "ask HOST:PORT instead of the DNS Service's ClusterIP:53 (e.g. through kubectl port-forward)")
	cmd.Flags().StringVar(&o.DNSOptions.FromNamespace, "from-namespace", "", "resolve the short name as a pod of this namespace would (default: the Service's)")
	root.AddCommand(cmd)
	return root
}

// serviceName reads the one svc/NAME argument (a bare NAME is a Service too).
func serviceName(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("name one Service as svc/NAME (got %d arguments)", len(args))
	}
	kind, name, hasKind := strings.Cut(args[0], "/")
	if !hasKind {
		kind, name = "svc", args[0]
	}
	if kind != "svc" && kind != "service" && kind != "services" || name == "" {
		return "", fmt.Errorf("%q is not a Service: name it svc/NAME", args[0])
	}
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return "", fmt.Errorf("%q is not a valid Service name, so no DNS name can reach it: %s", name, strings.Join(errs, "; "))
	}
	return name, nil
}

// ParseArgs reads the command line after the program name ("diagnose", one svc/NAME, flags
// before or after it) without running anything. It returns flag.ErrHelp for help.
func ParseArgs(args []string) (*Options, error) {
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		return nil, flag.ErrHelp
	}
	var parsed *Options
	root := NewCommand(genericiooptions.NewTestIOStreamsDiscard(), func(_ *cobra.Command, o *Options) error {
		parsed = o
		return nil
	})
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return nil, err
	}
	if parsed == nil {
		return nil, fmt.Errorf("expected the subcommand %q", Subcommand)
	}
	return parsed, nil
}

// Main runs the command line after the program name ("diagnose", svc/NAME, flags), writes the
// verdict to stdout and errors to stderr, and returns the exit status: 0 healthy, 1 a problem
// found, 2 a usage or access error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	exitCode := ExitHealthy
	root := NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: stdout, ErrOut: stderr}, func(cmd *cobra.Command, o *Options) error {
		report, err := Run(cmd.Context(), o)
		if err != nil {
			return err
		}
		if err := Write(stdout, report, o.Output); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
		exitCode = report.ExitCode()
		return nil
	})
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		if errors.As(err, new(usageError)) || strings.HasPrefix(err.Error(), "unknown command") {
			fmt.Fprintf(stderr, "See '%s %s --help' for usage.\n", displayName(), Subcommand)
		}
		return ExitError
	}
	return exitCode
}

// Run connects through the kubeconfig the options name, reads what the diagnosis needs and
// returns its report. Errors are usage or access errors (exit status 2).
func Run(ctx context.Context, o *Options) (*Report, error) {
	cfg, namespace, err := LoadKubeconfig(o.ConfigFlags)
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
// ~/.kube/config; --context, --server, --as and the other flags) and the namespace (-n, else the
// context's, else default).
func LoadKubeconfig(flags *genericclioptions.ConfigFlags) (*rest.Config, string, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load the kubeconfig: %w", err)
	}
	namespace, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("read the namespace of the kubeconfig context: %w", err)
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

// ReadNodeTable reads this node's table for each IP family of the Service, through knftables
// running the nft binary given, and returns it with the families whose table does not exist. It
// only reads: it never modifies nftables.
func ReadNodeTable(ctx context.Context, nft string, svc *corev1.Service) (*NodeTable, []string, error) {
	table := NewNodeTable()
	var missing []string
	families := map[string]bool{}
	for _, ip := range clusterIPs(svc) {
		families[string(nftFamily(ip))] = true
	}
	for _, family := range slices.Sorted(maps.Keys(families)) {
		err := readFamily(ctx, nft, knftables.Family(family), table)
		if knftables.IsNotFound(err) {
			missing = append(missing, family)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("list the nftables table %s %s (run on the node as root, with nft installed): %w", family, NFTTableName, err)
		}
	}
	return table, missing, nil
}

func nftFamily(ip string) knftables.Family {
	if endpointrules.FamilyOf(ip) == corev1.IPv6Protocol {
		return knftables.IPv6Family
	}
	return knftables.IPv4Family
}

// readFamily reads the maps through knftables, then the rules' bodies, which knftables does not
// list, from nft's JSON.
func readFamily(ctx context.Context, nft string, family knftables.Family, table *NodeTable) error {
	path, err := exec.LookPath(nft)
	if err != nil {
		return err
	}
	iface, err := newKnftables(path, family)
	if err != nil {
		return err
	}
	if err := table.ReadMaps(ctx, iface); err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-j", "list", "table", string(family), NFTTableName)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return table.AddRulesJSON(stdout.Bytes())
}

// newKnftables opens the table through knftables with the nft binary at path. knftables runs the
// nft it finds on $PATH, so the binary's directory goes first on $PATH while it looks; the binary
// must be called nft.
func newKnftables(path string, family knftables.Family) (knftables.Interface, error) {
	if filepath.Base(path) != "nft" {
		return nil, fmt.Errorf("--nft %s: the binary must be called nft", path)
	}
	saved := os.Getenv("PATH")
	defer os.Setenv("PATH", saved)
	if err := os.Setenv("PATH", filepath.Dir(path)+string(os.PathListSeparator)+saved); err != nil {
		return nil, err
	}
	return knftables.New(family, NFTTableName)
}
