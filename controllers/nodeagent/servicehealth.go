package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// HealthCheckNodePort returns the port on which a Service's load balancer asks each node
// whether it has local endpoints, or 0: only Services of type LoadBalancer with
// externalTrafficPolicy Local have one (the API server allocates it).
func HealthCheckNodePort(svc *corev1.Service) int32 {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		return 0
	}
	return svc.Spec.HealthCheckNodePort
}

// LocalReadyEndpoints counts the distinct addresses of the slices' ready endpoints on
// nodeName, of the Service's primary IP family (a pod with an IPv4 and an IPv6 address
// counts once), as kube-proxy reports them to load balancers.
func LocalReadyEndpoints(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, nodeName string) int {
	addressType := discoveryv1.AddressTypeIPv4
	if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
		addressType = discoveryv1.AddressTypeIPv6
	}
	ips := map[string]bool{}
	for _, s := range slices {
		if s.AddressType != addressType {
			continue
		}
		for _, ep := range s.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if ready && ep.NodeName != nil && *ep.NodeName == nodeName && len(ep.Addresses) > 0 {
				ips[ep.Addresses[0]] = true
			}
		}
	}
	return len(ips)
}

// ServiceHealthServers runs one HTTP server per healthCheckNodePort, as kube-proxy does:
// it answers 200 while the Service has local endpoints and the proxy is healthy, else 503,
// with {"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":bool}.
type ServiceHealthServers struct {
	// Addresses are the IPs to listen on (the NodePort addresses); empty: all.
	Addresses []string
	// ProxyHealthy reports the proxy's own health (ProxyHealth.Healthy).
	ProxyHealthy func() bool

	mu       sync.Mutex
	services map[types.NamespacedName]*serviceHealth
}

type serviceHealth struct {
	port           int32
	localEndpoints int
	servers        []*http.Server
}

// Set records the Service's health check port (0: none) and local endpoint count, and
// starts or stops its servers. A port that cannot be opened is an error (kube-proxy logs
// an Event); the record stays so that Set retries on the Service's next change.
func (s *ServiceHealthServers) Set(key types.NamespacedName, port int32, localEndpoints int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.services == nil {
		s.services = map[types.NamespacedName]*serviceHealth{}
	}
	cur := s.services[key]
	if cur != nil && (cur.port != port || len(cur.servers) == 0) {
		cur.close()
		delete(s.services, key)
		cur = nil
	}
	if port == 0 {
		return nil
	}
	if cur == nil {
		cur = &serviceHealth{port: port}
		s.services[key] = cur
		if err := s.listen(key, cur); err != nil {
			return err
		}
	}
	cur.localEndpoints = localEndpoints
	return nil
}

func (s *ServiceHealthServers) listen(key types.NamespacedName, h *serviceHealth) error {
	addrs := s.Addresses
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { s.answer(w, key) })
	for _, ip := range addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(h.port))))
		if err != nil {
			h.close()
			return fmt.Errorf("open healthCheckNodePort %d of service %s: %w", h.port, key, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		h.servers = append(h.servers, srv)
		go func() { _ = srv.Serve(l) }()
	}
	return nil
}

func (h *serviceHealth) close() {
	for _, srv := range h.servers {
		_ = srv.Close()
	}
	h.servers = nil
}

// serviceHealthBody is kube-proxy's answer on a healthCheckNodePort.
type serviceHealthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *ServiceHealthServers) answer(w http.ResponseWriter, key types.NamespacedName) {
	s.mu.Lock()
	h := s.services[key]
	count := 0
	if h != nil {
		count = h.localEndpoints
	}
	s.mu.Unlock()
	body := serviceHealthBody{LocalEndpoints: count, ServiceProxyHealthy: s.ProxyHealthy == nil || s.ProxyHealthy()}
	body.Service.Namespace, body.Service.Name = key.Namespace, key.Name
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
	// kube-proxy writes this one indented by tabs.
	out, _ := json.MarshalIndent(body, "", "\t")
	writeJSON(w, count > 0 && body.ServiceProxyHealthy, out)
}

// Close stops every server.
func (s *ServiceHealthServers) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, h := range s.services {
		h.close()
		delete(s.services, key)
	}
}

// serveUntilDone runs srv on addr until ctx ends.
func serveUntilDone(ctx context.Context, addr string, handler http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("open proxy health server on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy health server on %s: %w", addr, err)
	}
	return nil
}
