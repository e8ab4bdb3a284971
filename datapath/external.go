package datapath

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// externalFrontends renders what reaches a Service from outside the cluster, as
// kube-proxy's nftables mode does: its externalIPs and load balancer ingress IPs in the
// dispatch map beside ClusterIPs, its NodePorts in @service-nodeports, its
// loadBalancerSourceRanges as a firewall, and externalTrafficPolicy.
type externalFrontends struct {
	cfg       Config
	fi        familyInfo
	svc       *corev1.Service
	clusterIP string
	frag      *Fragment
	addresses []string // external IPs and load balancer IPs of the family, canonical, without duplicates
	lbIPs     []string // the load balancer IPs among them
	firewall  string   // the Service's firewall chain, "" when it has no source ranges
	local     bool     // externalTrafficPolicy: Local
}

// newExternalFrontends starts the external frontends of svc, with its firewall chain. It
// returns a value, which stays on the caller's stack: a full sync renders every Service.
func newExternalFrontends(cfg Config, fi familyInfo, svc *corev1.Service, clusterIP string, frag *Fragment) externalFrontends {
	e := externalFrontends{cfg: cfg, fi: fi, svc: svc, clusterIP: clusterIP, frag: frag,
		local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal}
	add := func(s string) string {
		ip := canonicalIP(strings.TrimSpace(s), fi.ipFamily)
		if ip == "" || ip == clusterIP || slices.Contains(e.addresses, ip) {
			return ""
		}
		e.addresses = append(e.addresses, ip)
		return ip
	}
	for _, ip := range svc.Spec.ExternalIPs {
		add(ip)
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		// ipMode Proxy: the load balancer sends to the nodes itself; its IP is not ours to catch.
		if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
			continue
		}
		if ip := add(ing.IP); ip != "" {
			e.lbIPs = append(e.lbIPs, ip)
		}
	}
	if len(e.lbIPs) > 0 {
		if allowed := e.allowedSources(); len(allowed) > 0 {
			e.firewall = FirewallChainName(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name})
			frag.Chains = append(frag.Chains, Chain{Name: e.firewall, Rules: []string{
				fmt.Sprintf("%s saddr != %s drop", fi.ipKeyword, nftSetLiteral(allowed))}})
		}
	}
	return e
}

// allowedSources are the family's loadBalancerSourceRanges (none when one of them is
// 0.0.0.0/0 or ::/0, which admits everyone), plus the load balancer IPs themselves when a
// range contains a node IP, so that the node can reach a VIP routed to itself.
func (e *externalFrontends) allowedSources() []string {
	var out []string
	allowNode := false
	for _, s := range e.svc.Spec.LoadBalancerSourceRanges {
		_, cidr, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil || (cidr.IP.To4() != nil) != (e.fi.ipFamily == corev1.IPv4Protocol) {
			continue
		}
		if ones, _ := cidr.Mask.Size(); ones == 0 {
			return nil
		}
		out = append(out, cidr.String())
		for _, n := range e.cfg.NodeIPs {
			if ip := net.ParseIP(n); ip != nil && cidr.Contains(ip) {
				allowNode = true
			}
		}
	}
	if allowNode && len(out) > 0 {
		out = append(out, e.lbIPs...)
	}
	return out
}

// renderPort adds the external frontends of one port that taken leaves to this Service;
// all are the port's endpoints before selection, clusterIPSlots the slot count of the
// port's ClusterIP endpoints (which the steps to the ClusterIP share; see padSlots).
func (e *externalFrontends) renderPort(port *corev1.ServicePort, all []Endpoint, taken func(string) bool, clusterIPSlots int) {
	proto, portNum := protocolName(port.Protocol), strconv.Itoa(int(port.Port))
	var addresses []string
	for _, ip := range e.addresses {
		if key := ip + " . " + proto + " . " + portNum; taken == nil || !taken(key) {
			addresses = append(addresses, ip)
			e.frag.frontends = append(e.frag.frontends, key)
		}
	}
	nodePort := ""
	if port.NodePort > 0 && port.NodePort <= 65535 {
		if key := proto + " . " + strconv.Itoa(int(port.NodePort)); taken == nil || !taken(key) {
			nodePort = strconv.Itoa(int(port.NodePort))
			e.frag.frontends = append(e.frag.frontends, key)
		}
	}
	if len(addresses) == 0 && nodePort == "" {
		return
	}
	clusterEps, _ := selectEndpoints(all, e.cfg.node(), false)
	var localEps []Endpoint
	if e.local {
		localEps, _ = selectEndpoints(all, e.cfg.node(), true)
	}
	e.recordUDP(port, addresses, nodePort, all)
	e.addFirewall(proto, portNum, addresses)
	if len(clusterEps) == 0 {
		e.noEndpoints(proto, portNum, addresses, nodePort, "goto "+rejectChain)
		return
	}
	if e.local && len(localEps) == 0 {
		// Traffic from outside is dropped; from the node and its pods it still flows.
		e.noEndpoints(proto, portNum, addresses, nodePort, "drop")
	}
	addHairpins(e.cfg, clusterEps, e.frag)
	if timeout, sticky := affinityTimeout(e.svc); sticky {
		verdict := "goto " + e.renderStickyPolicy(port, proto, clusterEps, localEps, timeout)
		e.dispatch(proto, portNum, addresses, nodePort, verdict, verdict)
	} else {
		byAddress, byNodePort := e.policyChains(len(clusterEps), len(localEps), clusterIPSlots)
		e.dispatch(proto, portNum, addresses, nodePort, byAddress.gotoVerdict(), byNodePort.gotoVerdict())
		if len(addresses) > 0 {
			e.frag.shared = append(e.frag.shared, byAddress.uses()...)
		}
		if nodePort != "" {
			e.frag.shared = append(e.frag.shared, byNodePort.uses()...)
		}
		for _, ip := range addresses {
			if byAddress.toClusterIP {
				e.frag.Elements = append(e.frag.Elements,
					Element{Set: externalClusterIPsMap, Key: []string{ip, proto, portNum}, Value: []string{e.clusterIP}})
			} else {
				addEndpointElements(clusterByAddress, proto, ip, portNum, clusterEps, e.frag)
			}
			addEndpointElements(localByAddress, proto, ip, portNum, localEps, e.frag)
		}
		switch {
		case nodePort != "" && byNodePort.toClusterIP:
			e.frag.Elements = append(e.frag.Elements,
				Element{Set: nodePortClusterIPsMap, Key: []string{proto, nodePort}, Value: []string{e.clusterIP}},
				Element{Set: nodePortServicePortsMap, Key: []string{proto, nodePort}, Value: []string{portNum}})
		case nodePort != "":
			addEndpointElements(clusterByNodePort, proto, "", nodePort, clusterEps, e.frag)
		}
		if nodePort != "" {
			addEndpointElements(localByNodePort, proto, "", nodePort, localEps, e.frag)
		}
	}
}

// policyChains are the shared chains external traffic goes to, by address and by NodePort.
// External traffic goes to the ClusterIP's endpoints when they are the same as its own,
// that is unless internalTrafficPolicy Local narrows the ClusterIP's to this node; it then
// picks among the ClusterIP's clusterIPSlots slots, not its n endpoints.
func (e *externalFrontends) policyChains(n, local, clusterIPSlots int) (sharedChain, sharedChain) {
	toClusterIP := e.svc.Spec.InternalTrafficPolicy == nil || *e.svc.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal
	if toClusterIP && clusterIPSlots > n {
		n = clusterIPSlots
	}
	if e.local {
		return sharedChain{kind: localPolicyByAddress, n: n, local: local, toClusterIP: toClusterIP},
			sharedChain{kind: localPolicyByNodePort, n: n, local: local, toClusterIP: toClusterIP}
	}
	return sharedChain{kind: masqueradeByAddress, n: n, toClusterIP: toClusterIP},
		sharedChain{kind: masqueradeByNodePort, n: n, toClusterIP: toClusterIP}
}

// renderStickyPolicy adds the per-port chains of external traffic to a Service with
// ClientIP affinity (its endpoints are chosen by per-endpoint chains, not through the
// shared maps) and returns the entry chain.
func (e *externalFrontends) renderStickyPolicy(port *corev1.ServicePort, proto string, clusterEps, localEps []Endpoint,
	timeout time.Duration) string {
	spn := ServicePortName(e.svc, port)
	cluster := renderAffinity(e.fi, ServiceChainName(spn+"/external"), spn, proto, clusterEps, timeout, true, e.frag)
	entry := Chain{Name: ExternalChainName(spn)}
	if !e.local {
		entry.Rules = []string{"jump " + markForMasqChain, "goto " + cluster}
	} else {
		if cidrs := cidrsOfFamily(e.cfg.ClusterCIDRs, e.fi.ipFamily); len(cidrs) > 0 {
			entry.Rules = append(entry.Rules, fmt.Sprintf("%s saddr %s goto %s", e.fi.ipKeyword, nftSetLiteral(cidrs), cluster))
		}
		entry.Rules = append(entry.Rules, "fib saddr type local jump "+markForMasqChain, "fib saddr type local goto "+cluster)
		if len(localEps) > 0 {
			local := renderAffinity(e.fi, ServiceChainName(spn+"/local"), spn, proto, localEps, timeout, false, e.frag)
			entry.Rules = append(entry.Rules, "goto "+local)
		}
	}
	e.frag.Chains = append(e.frag.Chains, entry)
	return entry.Name
}

// dispatch gives the frontends their verdicts (goto their chain).
func (e *externalFrontends) dispatch(proto, port string, addresses []string, nodePort, byAddress, byNodePort string) {
	for _, ip := range addresses {
		e.frag.Elements = append(e.frag.Elements, Element{Set: serviceIPsMap, Key: []string{ip, proto, port},
			Value: []string{byAddress}})
	}
	if nodePort != "" {
		e.frag.Elements = append(e.frag.Elements, Element{Set: serviceNodePortsMap, Key: []string{proto, nodePort},
			Value: []string{byNodePort}})
	}
}

// noEndpoints gives new connections to the frontends verdict in the filter hooks.
func (e *externalFrontends) noEndpoints(proto, port string, addresses []string, nodePort, verdict string) {
	for _, ip := range addresses {
		e.frag.Elements = append(e.frag.Elements, Element{Set: noEndpointServicesMap, Key: []string{ip, proto, port},
			Value: []string{verdict}})
	}
	if nodePort != "" {
		e.frag.Elements = append(e.frag.Elements, Element{Set: noEndpointNodePortsMap, Key: []string{proto, nodePort},
			Value: []string{verdict}})
	}
}

// addFirewall puts the port's load balancer IPs behind the Service's firewall chain.
// NodePorts are not subject to loadBalancerSourceRanges (kube-proxy's behaviour too).
func (e *externalFrontends) addFirewall(proto, port string, addresses []string) {
	if e.firewall == "" {
		return
	}
	for _, ip := range addresses {
		if slices.Contains(e.lbIPs, ip) {
			e.frag.Elements = append(e.frag.Elements, Element{Set: firewallIPsMap, Key: []string{ip, proto, port},
				Value: []string{"goto " + e.firewall}})
		}
	}
}

// recordUDP notes the UDP frontends and their serving endpoints, for conntrack cleanup.
func (e *externalFrontends) recordUDP(port *corev1.ServicePort, addresses []string, nodePort string, all []Endpoint) {
	if port.Protocol != corev1.ProtocolUDP {
		return
	}
	for _, ip := range addresses {
		e.frag.UDPPorts = append(e.frag.UDPPorts, UDPServicePort{ServiceIP: ip, Port: port.Port, ServingEndpoints: servingEndpoints(all)})
	}
	if nodePort != "" {
		e.frag.UDPPorts = append(e.frag.UDPPorts, UDPServicePort{Port: port.NodePort, ServingEndpoints: servingEndpoints(all)})
	}
}
