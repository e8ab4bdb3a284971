package datapath

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Fixed object names inside the table.
const (
	natPreroutingChain          = "nat-prerouting"
	natOutputChain              = "nat-output"
	natPostroutingChain         = "nat-postrouting"
	filterInputChain            = "filter-input"
	filterForwardChain          = "filter-forward"
	filterOutputChain           = "filter-output"
	filterPreroutingChain       = "filter-prerouting-pre-dnat"
	filterOutputPreDNATChain    = "filter-output-pre-dnat"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	firewallCheckChain          = "firewall-check"
	serviceNodePortsMap         = "service-nodeports"
	nodePortClusterIPsMap       = "nodeport-cluster-ips"
	externalClusterIPsMap       = "external-cluster-ips"
	nodePortServicePortsMap     = "nodeport-service-ports"
	noEndpointNodePortsMap      = "no-endpoint-nodeports"
	firewallIPsMap              = "firewall-ips"
	nodePortIPsSet              = "nodeport-ips"
	servicesChain               = "services"
	masqueradeCheckChain        = "masquerade-check"
	markForMasqChain            = "mark-for-masquerade"
	masqueradingChain           = "masquerading"
	endpointsCheckChain         = "service-endpoints-check"
	clusterIPsCheckChain        = "cluster-ips-check"
	rejectChain                 = "reject-chain"
	canaryChain                 = "canary"
	serviceIPsMap               = "service-ips"
	serviceEndpointsMap         = "service-endpoints"
	noEndpointServicesMap       = "no-endpoint-services"
	clusterIPsSet               = "cluster-ips"
	hairpinSet                  = "hairpin-endpoints"
	canaryComment               = "kube-clusterip canary: a missing rule means the table was flushed"
)

// ServicePortName identifies one port of one Service: "namespace/name/protocol/port-name",
// with the port number in place of the name of an unnamed port. The protocol is part of
// it because a Service may use one port name per protocol.
func ServicePortName(svc *corev1.Service, port *corev1.ServicePort) string {
	name := port.Name
	if name == "" {
		name = strconv.Itoa(int(port.Port))
	}
	return fmt.Sprintf("%s/%s/%s/%s", svc.Namespace, svc.Name, protocolName(port.Protocol), name)
}

// protocolName is the protocol as the rules name it ("tcp"), without allocating for
// the ones the API allows.
func protocolName(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolTCP:
		return "tcp"
	case corev1.ProtocolUDP:
		return "udp"
	case corev1.ProtocolSCTP:
		return "sctp"
	}
	return strings.ToLower(string(p))
}

// ServiceChainName is the chain that picks an endpoint for a Service port with
// ClientIP session affinity. The hash keeps names unique after truncation.
func ServiceChainName(servicePortName string) string {
	return "service-" + shortHash(servicePortName) + "-" + servicePortName
}

// EndpointChainName is the chain that records affinity and DNATs to one endpoint of a
// Service port with ClientIP session affinity.
func EndpointChainName(servicePortName string, ep Endpoint) string {
	base := servicePortName + "__" + nftSafe(ep.HostPort())
	return "endpoint-" + shortHash(base) + "-" + base
}

// AffinitySetName is the dynamic set of client IPs that recently went to one endpoint.
// The timeout is part of the name so that a changed timeout creates a new set instead
// of needing an in-place modification nft does not support.
func AffinitySetName(servicePortName string, ep Endpoint, timeout time.Duration) string {
	base := fmt.Sprintf("%s__%s/%ds", servicePortName, nftSafe(ep.HostPort()), int64(timeout.Seconds()))
	return "affinity-" + shortHash(base)
}

// ExternalChainName is the chain external traffic (external IPs, load balancer IPs,
// NodePorts) to a Service port with ClientIP affinity enters: it applies the
// externalTrafficPolicy. (Other Service ports share chains instead.)
func ExternalChainName(servicePortName string) string {
	return "external-" + shortHash(servicePortName) + "-" + servicePortName
}

// FirewallChainName is the chain that drops connections to a Service's load balancer IPs
// from outside its loadBalancerSourceRanges.
func FirewallChainName(svc types.NamespacedName) string {
	return "firewall-" + shortHash(svc.String()) + "-" + svc.String()
}

// DNATChainName is the shared chain that DNATs through @service-endpoints for every
// Service port with exactly n endpoints and no session affinity.
func DNATChainName(n int) string {
	return fmt.Sprintf("dnat-mod-%d", n)
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:])[:8])
}

// nftSafe maps an "ip:port" string onto the characters nft accepts in names.
func nftSafe(s string) string {
	return strings.NewReplacer(":", ".", "[", "", "]", "").Replace(s)
}
