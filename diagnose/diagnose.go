package diagnose

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	ipamv1alpha1 "github.com/kube-clusterip/kube-clusterip/api/v1alpha1"
	"github.com/kube-clusterip/kube-clusterip/datapath"
	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// Inputs are the objects one diagnosis reads; Diagnose touches nothing else.
type Inputs struct {
	// Service is the Service under diagnosis.
	Service *corev1.Service
	// Pods are the pods of the Service's namespace (all of them: near misses are found among them).
	Pods []*corev1.Pod
	// PodsElsewhere are pods of other namespaces that the selector matches (listed cluster-wide).
	PodsElsewhere []*corev1.Pod
	// Endpoints is the Endpoints object of the Service's name, nil when there is none.
	Endpoints *corev1.Endpoints
	// EndpointSlices are those labeled kubernetes.io/service-name with the Service's name.
	EndpointSlices []*discoveryv1.EndpointSlice
	// Pools are the ClusterIPPools; empty when there are none or they could not be read.
	Pools []*ipamv1alpha1.ClusterIPPool
	// ClusterDomain is the cluster's DNS domain; empty means cluster.local.
	ClusterDomain string
	// NodeTable is this node's nftables table, nil when the datapath is not checked.
	NodeTable *NodeTable
	// NodeName is the node NodeTable was read on.
	NodeName string
	// NodeZone is that node's topology.kubernetes.io/zone label, for topology hints.
	NodeZone string
	// ReadFindings are findings of the reading itself, such as an optional read RBAC forbade.
	ReadFindings []Finding
}

// ServiceSummary is the Service as pods see it: where it points, and the names that reach it.
type ServiceSummary struct {
	Namespace       string                 `json:"namespace"`
	Name            string                 `json:"name"`
	Type            corev1.ServiceType     `json:"type"`
	ClusterIPs      []ClusterIPSummary     `json:"clusterIPs,omitempty"`
	ExternalName    string                 `json:"externalName,omitempty"`
	Selector        map[string]string      `json:"selector,omitempty"`
	Ports           []PortSummary          `json:"ports,omitempty"`
	SessionAffinity corev1.ServiceAffinity `json:"sessionAffinity,omitempty"`
	DNSNames        []string               `json:"dnsNames"`
	SRVNames        []string               `json:"srvNames,omitempty"`
	EnvVars         []corev1.EnvVar        `json:"envVars,omitempty"`
}

// ClusterIPSummary is one ClusterIP and the ClusterIPPool whose CIDRs contain it.
type ClusterIPSummary struct {
	IP   string `json:"ip"`
	Pool string `json:"pool,omitempty"`
}

// PortSummary is one Service port: port -> targetPort, protocol, name.
type PortSummary struct {
	Name       string          `json:"name,omitempty"`
	Port       int32           `json:"port"`
	TargetPort string          `json:"targetPort"`
	Protocol   corev1.Protocol `json:"protocol"`
}

// Summarize describes the Service: type, ClusterIPs with their pools, ports, affinity, DNS names
// and the environment variables kubelet derives from it.
func Summarize(svc *corev1.Service, pools []*ipamv1alpha1.ClusterIPPool, clusterDomain string) *ServiceSummary {
	s := &ServiceSummary{
		Namespace: svc.Namespace, Name: svc.Name, Type: svc.Spec.Type, ExternalName: svc.Spec.ExternalName,
		Selector: svc.Spec.Selector, SessionAffinity: svc.Spec.SessionAffinity,
		DNSNames: DNSNames(svc, clusterDomain), SRVNames: SRVNames(svc, clusterDomain), EnvVars: ServiceEnvVars(svc),
	}
	if s.Type == "" {
		s.Type = corev1.ServiceTypeClusterIP
	}
	for _, ip := range clusterIPs(svc) {
		s.ClusterIPs = append(s.ClusterIPs, ClusterIPSummary{IP: ip, Pool: PoolOf(ip, pools)})
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, PortSummary{Name: p.Name, Port: p.Port, TargetPort: targetPortString(p), Protocol: endpointrules.ServicePortProtocol(&p)})
	}
	return s
}

// PoolOf is the name of the ClusterIPPool whose spec.cidrs contain the IP, "" when none does.
func PoolOf(ip string, pools []*ipamv1alpha1.ClusterIPPool) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	for _, pool := range pools {
		for _, cidr := range pool.Spec.CIDRs {
			if prefix, err := netip.ParsePrefix(cidr); err == nil && prefix.Contains(addr) {
				return pool.Name
			}
		}
	}
	return ""
}

// Diagnose runs the checklist over the inputs: the Service and its pool, the selector and near
// misses, readiness, ports, Endpoints and EndpointSlices, and the node's table when given.
func Diagnose(in Inputs) *Report {
	svc := in.Service
	report := &Report{Service: Summarize(svc, in.Pools, in.ClusterDomain)}
	var out findings
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		out.ok(CheckService, "ExternalName Service: DNS answers %s with a CNAME to %s; no ClusterIP, endpoints or datapath are involved", report.Service.DNSNames[2], svc.Spec.ExternalName)
		return finish(report, out)
	case len(clusterIPs(svc)) == 0:
		out.ok(CheckService, "headless Service (clusterIP None): DNS answers %s with the ready pods' IPs; no ClusterIP and no datapath", report.Service.DNSNames[2])
	default:
		out.ok(CheckService, "%s Service with ClusterIP(s) %s", report.Service.Type, strings.Join(clusterIPs(svc), ", "))
		out = append(out, checkPools(report.Service.ClusterIPs, in.Pools)...)
	}
	if !endpointrules.HasSelector(svc) {
		out = append(out, checkSelectorlessEndpoints(svc, in.Endpoints, in.EndpointSlices)...)
	} else {
		selected := endpointrules.SelectedPods(svc, in.Pods)
		out = append(out, checkSelector(svc, in.Pods, selected, in.PodsElsewhere)...)
		out = append(out, checkReadiness(svc, selected)...)
		out = append(out, checkPorts(svc, selected)...)
		out = append(out, checkSelectorEndpoints(svc, selected, in.Endpoints, in.EndpointSlices)...)
	}
	if in.NodeTable != nil && len(clusterIPs(svc)) > 0 {
		out = append(out, checkDatapath(svc, in.EndpointSlices, in.NodeTable, datapath.Node{Name: in.NodeName, Zone: in.NodeZone})...)
	}
	return finish(report, append(out, in.ReadFindings...))
}

func finish(report *Report, out findings) *Report {
	report.Findings = append([]Finding{}, out...)
	report.Verdict = verdictOf(report.Findings)
	return report
}

// ServiceNotFound is the report for a Service that does not exist, saying whether its namespace
// exists and naming the namespaces where a Service of that name does (a namespace mix-up).
func ServiceNotFound(namespace, name string, namespaceExists bool, sameNameElsewhere []string) *Report {
	var out findings
	fix := fmt.Sprintf("check the name and namespace (kubectl get services -n %s), or create the Service", namespace)
	switch {
	case !namespaceExists:
		fix = fmt.Sprintf("namespace %s does not exist: check -n (or the kubeconfig context's namespace)", namespace)
		if len(sameNameElsewhere) > 0 {
			fix += fmt.Sprintf("; a Service %s exists in namespace(s) %s", name, endpointrules.NameList(sameNameElsewhere))
		}
	case len(sameNameElsewhere) > 0:
		fix = fmt.Sprintf("a Service %s exists in namespace(s) %s: pass -n %s, or create it in %s", name, endpointrules.NameList(sameNameElsewhere), sameNameElsewhere[0], namespace)
	}
	out.problem(CheckService, fmt.Sprintf("Service %s/%s not found", namespace, name), fix)
	return finish(&Report{}, out)
}

// checkPools says which pool each ClusterIP came from; an IP in no pool was assigned by the API
// server on its own (the admission webhook was down or not installed).
func checkPools(ips []ClusterIPSummary, pools []*ipamv1alpha1.ClusterIPPool) findings {
	var out findings
	if len(pools) == 0 {
		return nil
	}
	for _, ip := range ips {
		if ip.Pool != "" {
			out.ok(CheckPool, "ClusterIP %s is in ClusterIPPool %s", ip.IP, ip.Pool)
			continue
		}
		out.warn(CheckPool, fmt.Sprintf("ClusterIP %s is in no ClusterIPPool: the API server assigned it on its own (was the admission webhook down?)", ip.IP),
			"create a ClusterIPPool covering it (kubectl get clusterippools) so the repair loop tracks it")
	}
	return out
}

// checkSelector grades the selector: the pods it matches, the pods that nearly match, and pods in
// other namespaces when it matches none here.
func checkSelector(svc *corev1.Service, pods, selected, elsewhere []*corev1.Pod) findings {
	var out findings
	selector := endpointrules.SelectorString(svc.Spec.Selector)
	misses := endpointrules.NearMisses(svc, pods)
	if len(selected) > 0 {
		out.ok(CheckSelector, "selector %s matches %d pod(s) in namespace %s: %s", selector, len(selected), svc.Namespace, endpointrules.NameList(endpointrules.PodNames(selected)))
		if len(misses) > 0 {
			out.warn(CheckSelector, "pods one label off the selector (typo?): "+endpointrules.DescribeNearMisses(misses),
				"if they should serve the Service, fix their labels in the pod template")
		}
		return out
	}
	message, _ := endpointrules.SelectorMatchesNoPod(svc, pods)
	fix := fmt.Sprintf("label the pods %s (in their pod template) or change the Service's selector", selector)
	if len(misses) > 0 {
		fix = "fix the differing label named above, in the pod template or in the Service's selector"
	}
	out.problem(CheckSelector, message, fix)
	if len(elsewhere) > 0 {
		byNamespace := map[string][]string{}
		for _, pod := range elsewhere {
			byNamespace[pod.Namespace] = append(byNamespace[pod.Namespace], pod.Name)
		}
		for _, ns := range slices.Sorted(maps.Keys(byNamespace)) {
			out.problem(CheckSelector, fmt.Sprintf("selector %s matches %d pod(s) in namespace %s instead: %s", selector, len(byNamespace[ns]), ns, endpointrules.NameList(byNamespace[ns])),
				fmt.Sprintf("a Service selects pods of its own namespace only: create the Service in namespace %s (or run the pods in %s)", ns, svc.Namespace))
		}
	}
	return out
}
