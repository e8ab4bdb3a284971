package endpoints

import (
	"fmt"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Our writers, named after the kube-controller-manager controllers whose work each does.
const (
	endpointsWriterName = "endpoint-controller"
	sliceWriterName     = "endpointslice-controller"
	mirroringWriterName = "endpointslicemirroring-controller"
)

// writerClient builds the client through which one writer writes. As kube-controller-manager
// gives each endpoint controller a clientset of its own, it has rate limiters of its own at the
// manager's QPS and Burst (the mirroring controller's EndpointSlice writes never wait for the
// endpoints controller's), and a user agent ending in "/<name>" so that audit logs tell the
// writers apart. It reads, if at all, from the manager's cache.
func writerClient(mgr ctrl.Manager, newClient client.NewClientFunc, name string) (client.Client, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	// client-go makes a new token bucket from QPS and Burst only when no limiter is given; a
	// limiter in the config would be shared by every client built from it.
	cfg.RateLimiter = nil
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	cfg.UserAgent += "/" + name
	c, err := newClient(cfg, client.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		Cache:  &client.CacheOptions{Reader: mgr.GetCache()},
	})
	if err != nil {
		return nil, fmt.Errorf("create the API client of the %s writer: %w", name, err)
	}
	return c, nil
}
