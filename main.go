// Command kube-clusterip runs the ClusterIP Service stack: the leader-elected control loops
// (ClusterIP assignment, endpoints) and, on nodes, the nftables datapath agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/controllers/cachesync"
	"github.com/kube-clusterip/kube-clusterip/controllers/endpoints"
	"github.com/kube-clusterip/kube-clusterip/controllers/ipam"
	"github.com/kube-clusterip/kube-clusterip/controllers/nodeagent"
	"github.com/kube-clusterip/kube-clusterip/controllers/webhookcert"
	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/diagnose"
)

var scheme = runtime.NewScheme()

// version is set at build time: go build -ldflags "-X main.version=v0.1.0" (make build,
// make docker-build).
var version = "dev"

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ipamv1alpha1.AddToScheme(scheme))
}

// The control loops --controllers can name.
const (
	controllerAllocator = "allocator"
	controllerEndpoints = "endpoints"
)

// options are the command line; each component's own Options are filled in place.
type options struct {
	printVersion     bool
	controllers      string
	runDatapath      bool
	metricsAddr      string
	metricsSecure    bool
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	webhookCertDir   string
	webhookPort      int
	kubeAPIQPS       float64
	kubeAPIBurst     int
	clusterCIDRs     string
	serviceCIDRs     string
	nodeAgent        nodeagent.Options
	datapath         datapath.Config
	ipam             ipam.Options
	endpoints        endpoints.Options
	endpointsWorkers int
	cleanup          bool
	initOnly         bool
	conntrack        datapath.ConntrackSettings
	proxyName        string
	healthzAddr      string
	healthTimeout    time.Duration
	nodePortAddrs    string
	nodeIPs          string
	webhookCert      webhookcert.Options
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	fs.StringVar(&o.controllers, "controllers", controllerAllocator+","+controllerEndpoints,
		"Comma-separated control loops to run (leader-elected): allocator (ClusterIPPools, admission webhook, repair loop), endpoints (Endpoints, EndpointSlices, mirroring). Empty runs none, e.g. on nodes with --datapath.")
	fs.BoolVar(&o.runDatapath, "datapath", false, "Run the node agent that programs this node's nftables for ClusterIPs (needs NET_ADMIN; not leader-elected).")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "0", "Address the metrics endpoint binds to, e.g. :8443 (HTTPS) or :8080 (with --metrics-secure=false); 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization through the API server.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to; 0 disables them.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader among replicas, so that one runs the control loops at a time.")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease; empty: the Pod's own (in a cluster).")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key for the admission webhook server. Empty: no webhook is served, and the API server assigns ClusterIPs itself (the repair loop still mirrors them).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port of the admission webhook server.")
	fs.BoolVar(&o.printVersion, "version", false, "Print the version and exit.")
	fs.StringVar(&o.webhookCert.Secret.Name, "webhook-cert-secret", "", "Keep the webhook's serving certificate ourselves (no cert-manager): a self-signed CA and certificate in this Secret (it must exist; mount it at --webhook-cert-dir), renewed before expiry, the CA written into the webhook configurations. Empty: the certificate is managed outside (e.g. cert-manager).")
	fs.StringVar(&o.webhookCert.Secret.Namespace, "webhook-cert-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of --webhook-cert-secret and --webhook-service (default $POD_NAMESPACE).")
	fs.StringVar(&o.webhookCert.Service, "webhook-service", "kube-clusterip-webhook-service", "The webhook's Service, whose DNS name the self-managed certificate is for.")
	fs.StringVar(&o.webhookCert.MutatingWebhookConfiguration, "mutating-webhook-configuration", "kube-clusterip-mutating-webhook-configuration", "MutatingWebhookConfiguration that receives the self-managed CA.")
	fs.StringVar(&o.webhookCert.ValidatingWebhookConfiguration, "validating-webhook-configuration", "kube-clusterip-validating-webhook-configuration", "ValidatingWebhookConfiguration that receives the self-managed CA.")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", 50, "Queries per second to the API server, of each client: the manager's, and each endpoints writer's (Endpoints, EndpointSlices, mirrored EndpointSlices), as kube-controller-manager gives each controller its own.")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", 100, "Burst of queries to the API server, of each client (see --kube-api-qps).")

	fs.StringVar(&o.ipam.DefaultServiceCIDR, "default-service-cidr", "10.96.0.0/12", "CIDR(s) of the pool \"default\", created when no ClusterIPPool exists and the cluster has no ServiceCIDR \"kubernetes\"; an IPv4 and an IPv6 CIDR separated by a comma for dual-stack.")
	fs.DurationVar(&o.ipam.ReservationGracePeriod, "clusterip-reservation-grace-period", ipam.DefaultReservationGracePeriod, "How long an address the webhook handed out stays reserved for a Service that has not appeared (dry runs, creates rejected after admission).")
	fs.DurationVar(&o.ipam.ReadyWait, "clusterip-webhook-ready-wait", ipam.DefaultReadyWait, "How long a webhook request waits for the initial rebuild of the pools before the API server assigns the address itself.")
	fs.StringVar(&o.ipam.ClaimNamespace, "clusterip-claim-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the Leases through which replicas claim the ClusterIPs they hand out, so that every replica may serve the webhooks (default $POD_NAMESPACE). Empty: no claims; run a single replica.")
	fs.IntVar(&o.ipam.ConcurrentServiceSyncs, "concurrent-clusterip-syncs", 4, "Services the ClusterIP repair loop mirrors in parallel.")
	o.ipam.StashSize = fs.Int("clusterip-stash-size", ipam.DefaultStashSize, "Most ClusterIPs a replica claims and checks ahead of admissions, per pool and family, so that the mutating webhook answers without API calls; 0 turns this off.")

	fs.DurationVar(&o.endpoints.BatchPeriod, "endpoint-updates-batch-period", 0, "Delay before a Service's endpoints are written after a pod change, so that a burst becomes one write (upstream's flag of the same name).")
	fs.IntVar(&o.endpoints.MaxEndpointsPerSlice, "max-endpoints-per-slice", 100, "Most endpoints in one EndpointSlice.")
	fs.IntVar(&o.endpointsWorkers, "concurrent-service-endpoint-syncs", endpoints.DefaultConcurrentSyncs, "Services whose endpoints are synced in parallel (upstream: 5).")
	fs.BoolVar(&o.endpoints.DisableMirroring, "disable-endpoint-mirroring", false, "Do not mirror user-written Endpoints of selectorless Services into EndpointSlices.")

	fs.StringVar(&o.datapath.NodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (default $NODE_NAME, from the downward API): picks local endpoints for internalTrafficPolicy: Local, and the Node whose topology.kubernetes.io/zone label topology hints are read against.")
	fs.StringVar(&o.clusterCIDRs, "cluster-cidr", "", "Comma-separated pod CIDRs; connections to a ClusterIP from outside them are masqueraded.")
	fs.StringVar(&o.serviceCIDRs, "service-cluster-ip-range", "", "Comma-separated Service CIDRs; packets to an address in them that no Service holds are dropped. Empty: the CIDRs of the cluster's ServiceCIDR objects, followed live (a range added later is protected without a restart). Set: checked against them at start; if they disagree the agent programs nothing, says why (log, Warning Event on its Node) and stays unready.")
	fs.BoolVar(&o.datapath.MasqueradeAll, "masquerade-all", false, "Masquerade every connection to a ClusterIP.")
	fs.IntVar(&o.datapath.MasqueradeBit, "masquerade-bit", datapath.DefaultMasqueradeBit, "Packet mark bit (0-31) that asks for masquerading.")
	fs.DurationVar(&o.nodeAgent.MinSyncPeriod, "datapath-min-sync-period", 100*time.Millisecond, "Shortest time between two nftables syncs once two have followed one another (kube-proxy's burst of 2); changes inside it are applied together.")
	fs.DurationVar(&o.datapath.FullSyncPeriod, "datapath-full-sync-period", time.Hour, "How often the whole nftables table is rewritten.")
	fs.DurationVar(&o.datapath.CanaryCheckPeriod, "datapath-flush-check-period", time.Second, "How often the agent checks that its table was not flushed or deleted from outside.")
	fs.IntVar(&o.nodeAgent.MaxConsecutiveFailures, "datapath-max-sync-failures", 3, "Failed nftables syncs in a row after which /healthz fails.")
	fs.BoolVar(&o.cleanup, "cleanup", false, "Delete every nftables table the node agent created (both IP families), then exit 0: uninstall, or a switch back to kube-proxy.")
	fs.BoolVar(&o.initOnly, "init-only", false, "Set this node's conntrack limits and timeouts (the --conntrack-* flags), which needs privileges the node agent otherwise does without, then exit 0: the install runs this in a privileged init container, as kube-proxy --init-only.")
	o.conntrack = datapath.DefaultConntrackSettings()
	fs.IntVar(&o.conntrack.MaxPerCore, "conntrack-max-per-core", o.conntrack.MaxPerCore, "Connections tracked per CPU of the node: nf_conntrack_max is raised to this times the CPUs, at least --conntrack-min and at most 1048576, and the conntrack hash table to a quarter of it; 0 leaves both as they are (kube-proxy's flags, defaults and semantics).")
	fs.IntVar(&o.conntrack.Min, "conntrack-min", o.conntrack.Min, "The least nf_conntrack_max, whatever the CPUs (see --conntrack-max-per-core).")
	fs.DurationVar(&o.conntrack.TCPEstablishedTimeout, "conntrack-tcp-timeout-established", o.conntrack.TCPEstablishedTimeout, "Idle timeout of established TCP connections in conntrack (nf_conntrack_tcp_timeout_established); 0 leaves it.")
	fs.DurationVar(&o.conntrack.TCPCloseWaitTimeout, "conntrack-tcp-timeout-close-wait", o.conntrack.TCPCloseWaitTimeout, "How long conntrack keeps TCP connections in CLOSE_WAIT (nf_conntrack_tcp_timeout_close_wait); 0 leaves it.")
	fs.BoolVar(&o.conntrack.TCPBeLiberal, "conntrack-tcp-be-liberal", false, "Set nf_conntrack_tcp_be_liberal to 1: out-of-window TCP packets are not marked INVALID.")
	fs.DurationVar(&o.conntrack.UDPTimeout, "conntrack-udp-timeout", 0, "Idle timeout of unreplied UDP flows (nf_conntrack_udp_timeout); 0 leaves it.")
	fs.DurationVar(&o.conntrack.UDPStreamTimeout, "conntrack-udp-timeout-stream", 0, "Idle timeout of assured UDP flows (nf_conntrack_udp_timeout_stream); 0 leaves it.")
	fs.StringVar(&o.proxyName, "service-proxy-name", "", "Serve only the Services (and EndpointSlices) labelled service.kubernetes.io/service-proxy-name with this value, beside kube-proxy serving the unlabelled ones. Empty: serve the unlabelled ones, replacing kube-proxy.")
	fs.StringVar(&o.healthzAddr, "healthz-bind-address", "0.0.0.0:10256", "Address of the proxy health server (/healthz for load balancers, /livez), kube-proxy's; empty disables it.")
	fs.DurationVar(&o.healthTimeout, "proxy-health-timeout", nodeagent.DefaultProxyHealthTimeout, "How long a queued Service or endpoint change may wait for a successful sync before /healthz and /livez fail.")
	fs.StringVar(&o.nodePortAddrs, "nodeport-addresses", datapath.NodePortAddressesPrimary, "Comma-separated CIDRs of the local addresses that accept NodePort traffic (and serve healthCheckNodePorts), and kube-proxy's keywords: \"primary\" for the node's primary IPs (the default), \"all\" (or 0.0.0.0/0) for every local address, \"localhost\" for none: loopback addresses never serve NodePorts, as in kube-proxy's nftables mode.")
	fs.StringVar(&o.nodeIPs, "node-ip", "", "Comma-separated primary IPs of this node. Empty: the InternalIPs (else ExternalIPs) of its Node.")
	return o
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func main() {
	// `kube-clusterip diagnose ...` and the binary installed as kubectl-clusterip run the
	// Service checklist instead of the manager, before the manager's flags are parsed.
	if diagnose.IsInvocation(os.Args) {
		os.Exit(diagnose.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	fs := flag.CommandLine
	o := bindFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	flag.Parse()
	if o.printVersion {
		fmt.Println("kube-clusterip", version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if o.cleanup {
		if err := cleanup(o); err != nil {
			ctrl.Log.WithName("setup").Error(err, "cleanup failed")
			os.Exit(1)
		}
		return
	}
	if o.initOnly {
		if err := setConntrack(o.conntrack); err != nil {
			ctrl.Log.WithName("setup").Error(err, "--init-only failed")
			os.Exit(1)
		}
		ctrl.Log.WithName("setup").Info("the node's conntrack settings are in place; --init-only: exiting")
		return
	}
	if err := run(o); err != nil {
		ctrl.Log.WithName("setup").Error(err, "kube-clusterip failed")
		os.Exit(1)
	}
}

func run(o *options) error {
	log := ctrl.Log.WithName("setup")
	ctx := ctrl.SetupSignalHandler()
	controllers := map[string]bool{}
	for _, name := range splitList(o.controllers) {
		if name != controllerAllocator && name != controllerEndpoints {
			return fmt.Errorf("--controllers: unknown control loop %q (known: %s, %s)", name, controllerAllocator, controllerEndpoints)
		}
		controllers[name] = true
	}
	if len(controllers) == 0 && !o.runDatapath {
		return fmt.Errorf("nothing to run: name --controllers or set --datapath")
	}

	cfg, err := ctrl.GetConfig()
	if err != nil {
		if o.runDatapath {
			// A node without kube-proxy reaches the API server only by its real address.
			return fmt.Errorf("find the API server: %w (the node agent needs the API server's address as nodes reach it: "+
				"set KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT in the install's node-agent-settings)", err)
		}
		return fmt.Errorf("find the API server (kubeconfig or in-cluster config): %w", err)
	}
	cfg.QPS, cfg.Burst = float32(o.kubeAPIQPS), o.kubeAPIBurst
	// As kube-controller-manager and kube-proxy do: the API server gzips every list and
	// watch-list above 128 KiB for a client that accepts it, at a CPU cost that a cluster's own
	// network does not repay; ours (every pod, every Service) are big.
	cfg.DisableCompression = true
	// Every Endpoints write draws the API server's "v1 Endpoints is deprecated" warning;
	// we write them on purpose (users still read them), so log each warning once.
	cfg.WarningHandlerWithContext = crlog.NewKubeAPIWarningLogger(crlog.KubeAPIWarningLoggerOptions{Deduplicate: true})
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure}
	if o.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	serveWebhook := controllers[controllerAllocator] && o.webhookCertDir != ""
	nodeCache := cache.ByObject{Transform: endpoints.NodeCacheTransform}
	if !controllers[controllerEndpoints] && o.runDatapath {
		// A node agent alone needs only its own Node (for its zone), as kube-proxy watches it:
		// not every Node of the cluster on every node.
		nodeCache = nodeagent.OwnNodeCache(o.datapath.NodeName)
	}
	mgrOpts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "kube-clusterip.clusterip.dev",
		LeaderElectionNamespace: o.leaderElectionNS,
		// Controllers start the moment the caches are in sync, not at the next 100 ms poll.
		NewCache: cachesync.New,
		// Only the endpoints controller reads Pods and (typed) Nodes: cache just what it
		// computes from. (The node agent reads its Node's metadata, a cache of its own.)
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:  {Transform: endpoints.PodCacheTransform},
			&corev1.Node{}: nodeCache,
		}},
	}
	mgrOpts.WebhookServer = webhook.NewServer(webhook.Options{CertDir: o.webhookCertDir, Port: o.webhookPort})
	selfManagedCert := serveWebhook && o.webhookCert.Secret.Name != ""
	certReady := make(chan struct{})
	switch {
	case !serveWebhook:
		mgrOpts.WebhookServer = unservedWebhooks{mgrOpts.WebhookServer}
	case selfManagedCert:
		mgrOpts.WebhookServer = webhookcert.StartWhenReady(mgrOpts.WebhookServer, certReady)
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return fmt.Errorf("create the manager: %w", err)
	}
	if selfManagedCert {
		o.webhookCert.CertDir = o.webhookCertDir
		if err := webhookcert.Setup(mgr, o.webhookCert, certReady); err != nil {
			return err
		}
	}

	if controllers[controllerAllocator] {
		if err := ipam.SetupWithManager(mgr, o.ipam); err != nil {
			return err
		}
		if serveWebhook {
			if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
				return err
			}
		} else {
			log.Info("no --webhook-cert-dir: the admission webhook is off, the API server assigns ClusterIPs and the repair loop mirrors them")
		}
	}
	if controllers[controllerEndpoints] {
		o.endpoints.ConcurrentSyncs = o.endpointsWorkers
		if err := endpoints.SetupWithManager(mgr, o.endpoints); err != nil {
			return err
		}
	}
	if o.runDatapath {
		if err := setupDatapath(ctx, mgr, o); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting manager", "version", version, "controllers", o.controllers, "datapath", o.runDatapath)
	return mgr.Start(ctx)
}

// cleanup deletes the node agent's tables, as kube-proxy --cleanup does its own.
func cleanup(o *options) error {
	o.datapath.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	proxier, err := datapath.New(o.datapath)
	if err != nil {
		return fmt.Errorf("set up the datapath: %w", err)
	}
	return proxier.Cleanup(context.Background())
}

// setConntrack applies the --conntrack-* settings, as kube-proxy does when it starts.
func setConntrack(s datapath.ConntrackSettings) error {
	if s.MaxPerCore < 0 || s.Min < 0 || s.TCPEstablishedTimeout < 0 || s.TCPCloseWaitTimeout < 0 || s.UDPTimeout < 0 || s.UDPStreamTimeout < 0 {
		return fmt.Errorf("the --conntrack-* flags must not be negative")
	}
	changed, err := s.Apply("/", datapath.NodeCPUs())
	for _, c := range changed {
		ctrl.Log.WithName("setup").Info("set conntrack setting", "setting", c)
	}
	if err != nil {
		return fmt.Errorf("set the conntrack settings of --conntrack-*: %w", err)
	}
	return nil
}

// datapathEventSource is the reporting controller of the node agent's Events on its Node.
const datapathEventSource = "kube-clusterip-datapath"

func setupDatapath(ctx context.Context, mgr ctrl.Manager, o *options) error {
	if o.datapath.NodeName == "" {
		return fmt.Errorf("--datapath needs --node-name (or $NODE_NAME)")
	}
	if err := setConntrack(o.conntrack); err != nil {
		return err
	}
	log := ctrl.Log.WithName("setup")
	nodeIPs := splitList(o.nodeIPs)
	if len(nodeIPs) == 0 {
		var err error
		if nodeIPs, err = nodeAddresses(ctx, mgr.GetAPIReader(), o.datapath.NodeName); err != nil {
			log.Error(err, "this node's primary IPs are unknown")
		}
	}
	localAddrs, err := localAddresses()
	if err != nil {
		return err
	}
	nodePortAddrs, err := datapath.ResolveNodePortAddresses(splitList(o.nodePortAddrs), nodeIPs, localAddrs)
	if err != nil && len(nodeIPs) == 0 {
		// Rather no NodePort than a node without ClusterIPs: answer on every local address.
		log.Error(err, "NodePorts answer on every local address (but loopback) until the agent restarts with --node-ip or a Node with addresses")
		nodePortAddrs = nil
	} else if err != nil {
		return err
	}
	o.datapath.NodeIPs, o.datapath.NodePortAddresses = nodeIPs, nodePortAddrs
	o.datapath.ClusterCIDRs = splitList(o.clusterCIDRs)
	serviceCIDRs, mismatch, err := resolveServiceCIDRs(mgr, splitList(o.serviceCIDRs))
	if err != nil {
		return err
	}
	if mismatch != "" {
		return refuseDatapath(mgr, o.datapath.NodeName, mismatch)
	}
	o.datapath.ServiceCIDRs = serviceCIDRs
	o.datapath.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	o.datapath.OnSync = nodeagent.RecordSync
	proxier, err := datapath.New(o.datapath)
	if err != nil {
		return fmt.Errorf("set up the datapath: %w", err)
	}
	health := nodeagent.NewProxyHealth(clock.RealClock{}, o.healthTimeout)
	agent := &nodeagent.Agent{Client: mgr.GetClient(), Proxier: proxier, Options: o.nodeAgent, NodeName: o.datapath.NodeName,
		ProxyName: o.proxyName, Health: health, HealthzAddress: o.healthzAddr, FallbackServiceCIDRs: o.datapath.ServiceCIDRs,
		ServiceHealth: &nodeagent.ServiceHealthServers{Addresses: nodePortAddrs, ProxyHealthy: health.Healthy},
		Recorder:      mgr.GetEventRecorder(datapathEventSource)}
	return agent.SetupWithManager(mgr)
}

// nodeAddresses reads the node's primary IPs from its Node: the InternalIPs, else the
// ExternalIPs (one per family), as kube-proxy does.
func nodeAddresses(ctx context.Context, c client.Reader, nodeName string) ([]string, error) {
	node := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: nodeName}, node); err != nil {
		return nil, fmt.Errorf("read Node %s for its addresses (or pass --node-ip): %w", nodeName, err)
	}
	for _, kind := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		var ips []string
		for _, a := range node.Status.Addresses {
			if a.Type == kind {
				ips = append(ips, a.Address)
			}
		}
		if len(ips) > 0 {
			return ips, nil
		}
	}
	return nil, fmt.Errorf("node %s has no InternalIP or ExternalIP address; pass --node-ip", nodeName)
}

// localAddresses lists the addresses of this network namespace's interfaces.
func localAddresses() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list local addresses for --nodeport-addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// resolveServiceCIDRs returns the Service CIDRs the datapath uses: the configured ones, or the
// cluster's (its ServiceCIDR objects) when none are configured. When both exist and disagree it
// says how (mismatch).
func resolveServiceCIDRs(mgr ctrl.Manager, configured []string) (cidrs []string, mismatch string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, err := nodeagent.ClusterServiceCIDRs(ctx, mgr.GetAPIReader())
	switch {
	case len(configured) == 0 && err != nil:
		return nil, "", fmt.Errorf("read the Service CIDRs from the cluster: %w (set --service-cluster-ip-range, the install's SERVICE_CIDR)", err)
	case len(configured) == 0:
		ctrl.Log.WithName("setup").Info("Service CIDRs read from the cluster's ServiceCIDR objects", "cidrs", cluster)
		return cluster, "", nil
	case err != nil:
		// An API server without ServiceCIDRs (or RBAC to read them): nothing to check against.
		ctrl.Log.WithName("setup").Info("cannot check --service-cluster-ip-range against the cluster", "reason", err.Error())
		return configured, "", nil
	}
	mismatch, err = nodeagent.ServiceCIDRMismatch(configured, cluster)
	return configured, mismatch, err
}

// refuseDatapath keeps the node agent from programming anything when its Service CIDRs disagree
// with the cluster's: it logs why, records a Warning Event on its Node, and fails /readyz with
// the reason, so that a rollout stops on the first node instead of dropping traffic on all.
func refuseDatapath(mgr ctrl.Manager, nodeName, mismatch string) error {
	ctrl.Log.WithName("setup").Error(errors.New(mismatch), "the node agent will not program this node")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mgr.GetAPIReader().Get(ctx, client.ObjectKeyFromObject(node), node); err != nil {
		ctrl.Log.WithName("setup").Error(err, "read this node for the Event; recording it by name only")
	}
	mgr.GetEventRecorder(datapathEventSource).Eventf(node, nil, corev1.EventTypeWarning,
		"ServiceCIDRMismatch", "CheckServiceCIDRs", "%s", mismatch)
	return mgr.AddReadyzCheck("service-cidrs", func(*http.Request) error {
		return fmt.Errorf("not programming this node: %s", mismatch)
	})
}

// unservedWebhooks keeps the admission handlers registered but never listens: without a
// certificate the API server cannot call us anyway, and failurePolicy Ignore lets it assign
// ClusterIPs itself.
type unservedWebhooks struct{ webhook.Server }

func (unservedWebhooks) Start(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (unservedWebhooks) NeedLeaderElection() bool { return false }
