package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CheckDNS is the check of --dns: what the cluster DNS answers for the Service's names.
const CheckDNS = "dns"

// DNS defaults: the Service kubeadm and most distributions give the cluster DNS, and how long one
// question may take (a DNS server that is down must not make diagnose hang).
const (
	DefaultDNSService = "kube-system/kube-dns"
	DNSQueryTimeout   = 2 * time.Second
	// podNdots is the ndots kubelet writes into pods' resolv.conf.
	podNdots = 5
)

// DNSQuerier asks one DNS question; diagnose uses a UDP client (dnsClient), the table tests a fake.
type DNSQuerier interface {
	Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error)
}

// DNSInputs are what the DNS check compares: the Service and its EndpointSlices (what the API
// says), the cluster DNS Service and its EndpointSlices (whether CoreDNS can answer at all), and a
// querier aimed at it.
type DNSInputs struct {
	Service        *corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	// DNSService is the cluster DNS Service (nil when it does not exist), named DNSServiceName.
	DNSService       *corev1.Service
	DNSServiceName   string
	DNSEndpointSlice []*discoveryv1.EndpointSlice
	// Server is the address queried (for messages); Querier asks it.
	Server  string
	Querier DNSQuerier
	// FromNamespace is the namespace of the pod whose search path resolves short names.
	FromNamespace string
	ClusterDomain string
}

// SearchPath is the search list kubelet writes into a pod's resolv.conf (dnsPolicy ClusterFirst).
func SearchPath(namespace, clusterDomain string) []string {
	return []string{namespace + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain}
}

// SearchCandidates are the names a stub resolver with the pod's search path and ndots:5 tries for
// name, in order: a name with fewer than 5 dots goes through the search list first.
func SearchCandidates(name, namespace, clusterDomain string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var candidates []string
	for _, suffix := range SearchPath(namespace, clusterDomain) {
		candidates = append(candidates, name+"."+suffix+".")
	}
	if strings.Count(name, ".") >= podNdots {
		return append([]string{name + "."}, candidates...)
	}
	return append(candidates, name+".")
}

// DiagnoseDNS queries the cluster DNS for the Service's names and compares the answers with the
// ClusterIPs (or, headless, the ready endpoints): the FQDN, NAME.NS and the short name through the
// search path of a pod in FromNamespace, and the SRV records of named ports.
func DiagnoseDNS(ctx context.Context, in DNSInputs) []Finding {
	var out findings
	domain := in.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	if !checkDNSService(&out, in) {
		return out
	}
	svc := in.Service
	want := expectedAddresses(svc, in.EndpointSlices)
	fqdn := serviceFQDN(svc, domain) + "."
	answer, err := in.Querier.Query(ctx, fqdn, dns.TypeA)
	if err != nil {
		out.problem(CheckDNS, fmt.Sprintf("no answer from the cluster DNS %s for %s: %v", in.Server, fqdn, err),
			fmt.Sprintf("CoreDNS is down or unreachable: kubectl -n %s get pods -l k8s-app=kube-dns, and its logs", namespaceOf(in.DNSServiceName)))
		return out
	}
	if answer.Rcode == dns.RcodeNameError {
		out.problem(CheckDNS, fmt.Sprintf("%s: NXDOMAIN from %s, though the Service exists", fqdn, in.Server),
			"CoreDNS does not see this Service: check that its kubernetes plugin serves "+domain+" (--cluster-domain) and reads this API server, and its logs")
		return out
	}
	for _, family := range []uint16{dns.TypeA, dns.TypeAAAA} {
		checkAddresses(ctx, &out, in, fqdn, family, want)
	}
	for _, name := range []string{svc.Name + "." + svc.Namespace, svc.Name} {
		checkSearchName(ctx, &out, in, name, fqdn, domain)
	}
	for i, srv := range SRVNames(svc, domain) {
		checkSRV(ctx, &out, in, srv+".", namedPorts(svc)[i])
	}
	return out
}

// checkDNSService says whether the cluster DNS Service exists and has a ready endpoint.
func checkDNSService(out *findings, in DNSInputs) bool {
	if in.DNSService == nil {
		out.problem(CheckDNS, fmt.Sprintf("no cluster DNS Service %s: pods cannot resolve any Service name", in.DNSServiceName),
			"deploy CoreDNS with its Service (kubeadm: kube-system/kube-dns), or name yours with --dns-service NAMESPACE/NAME")
		return false
	}
	ready := 0
	for _, slice := range in.DNSEndpointSlice {
		for _, ep := range slice.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			}
		}
	}
	if ready == 0 {
		out.problem(CheckDNS, fmt.Sprintf("cluster DNS Service %s has no ready endpoint: CoreDNS is not running or not ready", in.DNSServiceName),
			fmt.Sprintf("kubectl -n %s get pods -l k8s-app=kube-dns; then diagnose svc/%s -n %s", namespaceOf(in.DNSServiceName), nameOf(in.DNSServiceName), namespaceOf(in.DNSServiceName)))
		return false
	}
	out.ok(CheckDNS, "cluster DNS Service %s (%s) has %d ready endpoint(s); asking %s", in.DNSService.Spec.ClusterIP, in.DNSServiceName, ready, in.Server)
	return true
}

// checkAddresses compares the A or AAAA answer for fqdn with the addresses of that family in want.
func checkAddresses(ctx context.Context, out *findings, in DNSInputs, fqdn string, qtype uint16, want []string) {
	wantFamily := addressesOfFamily(want, qtype == dns.TypeAAAA)
	answer, err := in.Querier.Query(ctx, fqdn, qtype)
	if err != nil {
		out.problem(CheckDNS, fmt.Sprintf("%s %s: no answer from %s: %v", dns.TypeToString[qtype], fqdn, in.Server, err), "CoreDNS is overloaded or unreachable: check its pods and logs")
		return
	}
	got := answerAddresses(answer)
	switch {
	case slices.Equal(got, wantFamily) && len(got) == 0:
		// No address of this family on either side: nothing to say.
	case slices.Equal(got, wantFamily):
		out.ok(CheckDNS, "%s %s -> %s, as the API says", dns.TypeToString[qtype], fqdn, strings.Join(got, " "))
	default:
		out.problem(CheckDNS, fmt.Sprintf("%s %s: the DNS answers %s, the API says %s", dns.TypeToString[qtype], fqdn, listOrNone(got), listOrNone(wantFamily)),
			"answer differs: CoreDNS caches answers for the TTL (wait and retry), or reads another API server; check its kubernetes plugin and logs")
	}
}

// checkSearchName resolves name as a pod in FromNamespace would and says which candidate answered.
func checkSearchName(ctx context.Context, out *findings, in DNSInputs, name, fqdn, domain string) {
	candidates := SearchCandidates(name, in.FromNamespace, domain)
	for _, candidate := range candidates {
		answer, err := in.Querier.Query(ctx, candidate, dns.TypeA)
		if err != nil {
			out.problem(CheckDNS, fmt.Sprintf("%s (from a pod in %s): no answer for %s from %s: %v", name, in.FromNamespace, candidate, in.Server, err), "CoreDNS is overloaded or unreachable: check its pods and logs")
			return
		}
		if answer.Rcode == dns.RcodeNameError {
			continue
		}
		if candidate == fqdn {
			out.ok(CheckDNS, "%s (from a pod in %s) -> %s through the search path", name, in.FromNamespace, candidate)
			return
		}
		out.problem(CheckDNS, fmt.Sprintf("%s (from a pod in %s) resolves to %s -> %s, another name than the Service's %s", name, in.FromNamespace, candidate, listOrNone(answerAddresses(answer)), fqdn),
			fmt.Sprintf("wrong namespace: pods in %s reach this Service as %s.%s or %s", in.FromNamespace, in.Service.Name, in.Service.Namespace, strings.TrimSuffix(fqdn, ".")))
		return
	}
	out.problem(CheckDNS, fmt.Sprintf("%s (from a pod in %s): NXDOMAIN for every name of the search path (%s)", name, in.FromNamespace, strings.Join(candidates, ", ")),
		fmt.Sprintf("wrong namespace: the Service is in %s; from %s use %s.%s or %s", in.Service.Namespace, in.FromNamespace, in.Service.Name, in.Service.Namespace, strings.TrimSuffix(fqdn, ".")))
}

// checkSRV checks that the SRV record of a named port answers with the port's number.
func checkSRV(ctx context.Context, out *findings, in DNSInputs, name string, port corev1.ServicePort) {
	answer, err := in.Querier.Query(ctx, name, dns.TypeSRV)
	if err != nil {
		out.problem(CheckDNS, fmt.Sprintf("SRV %s: no answer from %s: %v", name, in.Server, err), "CoreDNS is overloaded or unreachable: check its pods and logs")
		return
	}
	var ports []string
	for _, rr := range answer.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			ports = append(ports, fmt.Sprintf("%d %s", srv.Port, srv.Target))
		}
	}
	want := fmt.Sprintf("%d ", port.Port)
	// A headless Service's SRV records carry each endpoint's port, not the Service's.
	if len(ports) == 0 || (len(clusterIPs(in.Service)) > 0 && !allHavePrefix(ports, want)) {
		out.problem(CheckDNS, fmt.Sprintf("SRV %s: the DNS answers %s (%s), the Service's port %s is %d", name, listOrNone(ports), dns.RcodeToString[answer.Rcode], port.Name, port.Port),
			"answer differs: check the port's name and protocol, and CoreDNS's logs")
		return
	}
	out.ok(CheckDNS, "SRV %s -> %s", name, strings.Join(ports, ", "))
}

// expectedAddresses are what the Service's name should resolve to: its ClusterIPs, or for a
// headless Service the addresses of its ready endpoints (all of them with publishNotReadyAddresses,
// which the controller already marks ready). Sorted.
func expectedAddresses(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) []string {
	if ips := clusterIPs(svc); len(ips) > 0 {
		return SortAddresses(slices.Clone(ips))
	}
	var ips []string
	for _, slice := range endpointSlices {
		for _, ep := range slice.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ips = append(ips, ep.Addresses...)
			}
		}
	}
	return SortAddresses(slices.Compact(SortAddresses(ips)))
}

func answerAddresses(m *dns.Msg) []string {
	var ips []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			ips = append(ips, r.A.String())
		case *dns.AAAA:
			ips = append(ips, r.AAAA.String())
		}
	}
	return SortAddresses(ips)
}

func addressesOfFamily(ips []string, ipv6 bool) []string {
	var out []string
	for _, ip := range ips {
		if addr, err := netip.ParseAddr(ip); err == nil && addr.Is6() == ipv6 {
			out = append(out, addr.String())
		}
	}
	return out
}

// SortAddresses sorts IP addresses numerically (IPv4 before IPv6), others as text, in place.
func SortAddresses(ips []string) []string {
	slices.SortFunc(ips, func(a, b string) int {
		x, errX := netip.ParseAddr(a)
		y, errY := netip.ParseAddr(b)
		if errX != nil || errY != nil {
			return strings.Compare(a, b)
		}
		return x.Compare(y)
	})
	return ips
}

func namedPorts(svc *corev1.Service) []corev1.ServicePort {
	var ports []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			ports = append(ports, p)
		}
	}
	return ports
}

func allHavePrefix(items []string, prefix string) bool {
	for _, item := range items {
		if !strings.HasPrefix(item, prefix) {
			return false
		}
	}
	return true
}

func listOrNone(items []string) string {
	if len(items) == 0 {
		return "nothing"
	}
	return strings.Join(items, " ")
}

func namespaceOf(namespacedName string) string {
	ns, _, _ := strings.Cut(namespacedName, "/")
	return ns
}

func nameOf(namespacedName string) string {
	_, name, _ := strings.Cut(namespacedName, "/")
	return name
}

// DNSOptions are the command line of the DNS check.
type DNSOptions struct {
	// Service is the cluster DNS Service, NAMESPACE/NAME (default DefaultDNSService).
	Service string
	// Server overrides the address asked (default: the DNS Service's ClusterIP, port 53), for
	// running diagnose where ClusterIPs are not reachable (e.g. through kubectl port-forward).
	Server string
	// FromNamespace is the namespace of the client pod whose search path resolves short names
	// (default: the Service's).
	FromNamespace string
}

// dnsCheckTimeout bounds the whole DNS check, whatever the number of names.
const dnsCheckTimeout = 30 * time.Second

// RunDNSCheck reads the cluster DNS Service and its EndpointSlices and runs DiagnoseDNS for the
// Service of in.
func RunDNSCheck(ctx context.Context, c client.Reader, in *Inputs, o DNSOptions) ([]Finding, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsCheckTimeout)
	defer cancel()
	if o.Service == "" {
		o.Service = DefaultDNSService
	}
	dnsIn := DNSInputs{
		Service: in.Service, EndpointSlices: in.EndpointSlices, DNSServiceName: o.Service,
		FromNamespace: o.FromNamespace, ClusterDomain: in.ClusterDomain, Server: o.Server,
	}
	if dnsIn.FromNamespace == "" {
		dnsIn.FromNamespace = in.Service.Namespace
	}
	namespace, name := namespaceOf(o.Service), nameOf(o.Service)
	dnsSvc := &corev1.Service{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, dnsSvc); {
	case apierrors.IsNotFound(err):
		return DiagnoseDNS(ctx, dnsIn), nil
	case err != nil:
		return nil, readError(err, "services", namespace)
	}
	dnsIn.DNSService = dnsSvc
	dnsSlices := &discoveryv1.EndpointSliceList{}
	if err := c.List(ctx, dnsSlices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return nil, readError(err, "endpointslices.discovery.k8s.io", namespace)
	}
	dnsIn.DNSEndpointSlice = pointers(dnsSlices.Items)
	if dnsIn.Server == "" {
		dnsIn.Server = net.JoinHostPort(dnsSvc.Spec.ClusterIP, "53")
	}
	dnsIn.Querier = NewDNSQuerier(dnsIn.Server)
	return DiagnoseDNS(ctx, dnsIn), nil
}

// ValidateDNSOptions checks the DNS flags' syntax.
func ValidateDNSOptions(o DNSOptions) error {
	if o.Service != "" {
		if ns, name, ok := strings.Cut(o.Service, "/"); !ok || ns == "" || name == "" {
			return fmt.Errorf("--dns-service %q: name the cluster DNS Service as NAMESPACE/NAME, e.g. %s", o.Service, DefaultDNSService)
		}
	}
	if o.Server != "" {
		if _, _, err := net.SplitHostPort(o.Server); err != nil {
			return fmt.Errorf("--dns-server %q: give HOST:PORT, e.g. 127.0.0.1:5353: %w", o.Server, err)
		}
	}
	return nil
}

// dnsClient asks one server over UDP (TCP when the answer is truncated), DNSQueryTimeout per question.
type dnsClient struct{ server string }

// NewDNSQuerier returns a querier for the DNS server at host:port.
func NewDNSQuerier(server string) DNSQuerier { return dnsClient{server: server} }

func (c dnsClient) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	udp := &dns.Client{Timeout: DNSQueryTimeout}
	answer, _, err := udp.ExchangeContext(ctx, m, c.server)
	if err == nil && answer.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: DNSQueryTimeout}
		answer, _, err = tcp.ExchangeContext(ctx, m, c.server)
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return nil, fmt.Errorf("no reply within %s", DNSQueryTimeout)
	}
	return answer, err
}
