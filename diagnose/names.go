package diagnose

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-clusterip/kube-clusterip/endpointrules"
)

// DefaultClusterDomain is the DNS domain of Services unless the cluster says otherwise
// (kubelet's --cluster-domain).
const DefaultClusterDomain = "cluster.local"

// DNSNames are the names a pod resolves to the Service: the short name from the Service's own
// namespace, NAME.NS from any namespace, and the fully qualified NAME.NS.svc.DOMAIN.
func DNSNames(svc *corev1.Service, clusterDomain string) []string {
	return []string{
		svc.Name,
		svc.Name + "." + svc.Namespace,
		serviceFQDN(svc, clusterDomain),
	}
}

// SRVNames are the DNS SRV records of the Service's named ports:
// _PORTNAME._PROTOCOL.NAME.NS.svc.DOMAIN, protocol lower-cased. Unnamed ports have none.
func SRVNames(svc *corev1.Service, clusterDomain string) []string {
	var names []string
	for _, p := range svc.Spec.Ports {
		if p.Name == "" {
			continue
		}
		names = append(names, fmt.Sprintf("_%s._%s.%s", p.Name, strings.ToLower(string(endpointrules.ServicePortProtocol(&p))), serviceFQDN(svc, clusterDomain)))
	}
	return names
}

func serviceFQDN(svc *corev1.Service, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	return svc.Name + "." + svc.Namespace + ".svc." + clusterDomain
}

// ServiceEnvVars are the environment variables kubelet gives containers of pods created after the
// Service (in its namespace, with enableServiceLinks), derived as kubelet's envvars.FromServices
// does: PREFIX is the name upper-cased with '-' as '_'; PREFIX_SERVICE_HOST is the ClusterIP,
// PREFIX_SERVICE_PORT the first port, PREFIX_SERVICE_PORT_<PORTNAME> each named port, then the
// Docker-link variables PREFIX_PORT (first port) and PREFIX_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}
// for every port. A Service without a ClusterIP (headless, ExternalName) gives none.
func ServiceEnvVars(svc *corev1.Service) []corev1.EnvVar {
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return nil
	}
	prefix := envVarName(svc.Name)
	vars := []corev1.EnvVar{
		{Name: prefix + "_SERVICE_HOST", Value: ip},
		{Name: prefix + "_SERVICE_PORT", Value: strconv.Itoa(int(svc.Spec.Ports[0].Port))},
	}
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			vars = append(vars, corev1.EnvVar{Name: prefix + "_SERVICE_PORT_" + envVarName(p.Name), Value: strconv.Itoa(int(p.Port))})
		}
	}
	return append(vars, dockerLinkEnvVars(prefix, ip, svc.Spec.Ports)...)
}

// PodServiceEnvVars are the Service environment variables kubelet gives a pod of namespace when
// it starts, from the Services that exist then (kubelet's getServiceEnvVarMap): those of every
// Service with a ClusterIP in the pod's namespace when enableServiceLinks (the API's default),
// and always those of the API server's Service "kubernetes" in "default". Sorted by name.
func PodServiceEnvVars(namespace string, enableServiceLinks bool, services []*corev1.Service) []corev1.EnvVar {
	byName := map[string]*corev1.Service{}
	for _, svc := range services {
		switch {
		case svc.Namespace == metav1.NamespaceDefault && svc.Name == apiServerServiceName:
			if _, taken := byName[svc.Name]; !taken {
				byName[svc.Name] = svc
			}
		case svc.Namespace == namespace && enableServiceLinks:
			byName[svc.Name] = svc
		}
	}
	var vars []corev1.EnvVar
	for _, svc := range byName {
		vars = append(vars, ServiceEnvVars(svc)...)
	}
	slices.SortFunc(vars, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	return vars
}

// apiServerServiceName is the Service of the API server in the default namespace, whose
// variables kubelet gives every pod.
const apiServerServiceName = "kubernetes"

func dockerLinkEnvVars(prefix, ip string, ports []corev1.ServicePort) []corev1.EnvVar {
	var vars []corev1.EnvVar
	for i, p := range ports {
		proto := strings.ToLower(string(endpointrules.ServicePortProtocol(&p)))
		url := proto + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
		if i == 0 {
			vars = append(vars, corev1.EnvVar{Name: prefix + "_PORT", Value: url})
		}
		portPrefix := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		vars = append(vars,
			corev1.EnvVar{Name: portPrefix, Value: url},
			corev1.EnvVar{Name: portPrefix + "_PROTO", Value: proto},
			corev1.EnvVar{Name: portPrefix + "_PORT", Value: strconv.Itoa(int(p.Port))},
			corev1.EnvVar{Name: portPrefix + "_ADDR", Value: ip},
		)
	}
	return vars
}

// envVarName is kubelet's makeEnvVariableName: upper case, '-' as '_'.
func envVarName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// targetPortString is the port's targetPort as the API server defaults it, for the summary.
func targetPortString(p corev1.ServicePort) string {
	target := endpointrules.TargetPort(&p)
	return target.String()
}
