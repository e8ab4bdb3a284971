package main

// The datapath workload of datapath/bench_test.go (BenchmarkFullSync, BenchmarkEndpointChange),
// run against upstream kube-proxy in nftables mode: the same Services and EndpointSlices
// (manyServices in datapath/fixtures_test.go, copied here), created in the API server; kube-proxy
// reports its sync times in its own metrics. It runs only in this program's private network
// namespace (see main.go), so it programs only that namespace's nftables.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-clusterip/kube-clusterip/test/published"

	"github.com/kube-clusterip/kube-clusterip/test/kit"
)

const (
	proxyMetricsAddr = "127.0.0.1:10249"
	proxyNodeName    = "node-a"
	proxyClusterCIDR = "10.244.0.0/16" // clusterCIDRv4 of the datapath tests
	proxySyncTimeout = 10 * time.Minute
)

// runKubeProxy measures kube-proxy's first full sync of services × 10 endpoints, the lines of its
// IPv4 table, and the partial syncs after `changes` single-endpoint readiness flips (median).
func runKubeProxy(ctx context.Context, o options, services, changes int, kind corev1.ServiceType) (map[string]float64, error) {
	if err := requirePrivateNetns(); err != nil {
		return nil, err
	}
	cp, err := startControlPlane(o.assets, o.workDir)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	c := cp.client
	logf("kube-proxy: creating %d Services x 10 endpoints", services)
	node := kit.MakeNode(proxyNodeName).Mutate(func(n *corev1.Node) {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}
	}).Obj()
	if err := c.Create(ctx, node); err != nil {
		return nil, err
	}
	slices := make([]*discoveryv1.EndpointSlice, services)
	err = published.Parallel(services, func(i int) error {
		svc, slice := proxyService(i, 10, kind)
		if err := c.Create(ctx, svc); err != nil {
			return fmt.Errorf("create Service %s: %w", svc.Name, err)
		}
		if err := c.Create(ctx, slice); err != nil {
			return fmt.Errorf("create EndpointSlice %s: %w", slice.Name, err)
		}
		slices[i] = slice
		return nil
	})
	if err != nil {
		return nil, err
	}

	logf("kube-proxy: starting, waiting for its first full sync")
	kp, err := startProcess(o.workDir, filepath.Join(o.upstream, "kube-proxy"),
		"--kubeconfig="+cp.kubeconfig,
		"--proxy-mode=nftables",
		"--hostname-override="+proxyNodeName,
		"--cluster-cidr="+proxyClusterCIDR,
		"--metrics-bind-address="+proxyMetricsAddr,
		"--healthz-bind-address=127.0.0.1:10256",
		"--conntrack-max-per-core=0",
		"--kube-api-qps="+strconv.Itoa(o.qps),
		"--kube-api-burst="+strconv.Itoa(2*o.qps),
		"--v=2")
	if err != nil {
		return nil, err
	}
	defer kp.stop()
	full, err := awaitSyncs(ctx, kp, "kubeproxy_sync_full_proxy_rules_duration_seconds", 1)
	if err != nil {
		return nil, fmt.Errorf("first full sync: %w", err)
	}
	lines, err := kubeProxyTableLines(filepath.Join(o.workDir, "kube-proxy-ruleset.nft"))
	if err != nil {
		return nil, err
	}
	logf("kube-proxy: first full sync %.3fs, %d lines; %d endpoint changes", full.sum, lines, changes)

	var partial []time.Duration
	for i := range changes {
		before, err := scrapeHistogram("kubeproxy_sync_partial_proxy_rules_duration_seconds")
		if err != nil {
			return nil, err
		}
		k := (i * 7919) % services // a different Service each time, as BenchmarkEndpointChange
		slice := slices[k]
		ready := !ptr.Deref(slice.Endpoints[0].Conditions.Ready, false)
		slice.Endpoints[0].Conditions.Ready = ptr.To(ready)
		if err := c.Update(ctx, slice); err != nil {
			return nil, fmt.Errorf("flip an endpoint of %s: %w", slice.Name, err)
		}
		after, err := awaitSyncs(ctx, kp, "kubeproxy_sync_partial_proxy_rules_duration_seconds", before.count+1)
		if err != nil {
			return nil, fmt.Errorf("partial sync after change %d: %w", i, err)
		}
		partial = append(partial, time.Duration((after.sum-before.sum)/float64(after.count-before.count)*float64(time.Second)))
		// kube-proxy's min-sync-period (1s) would otherwise hold the next sync back.
		time.Sleep(1100 * time.Millisecond)
	}
	return map[string]float64{
		"full-sync-s":     full.sum,
		"ruleset-lines":   float64(lines),
		"change-sync-ms":  published.Milliseconds(published.Percentile(partial, 50)),
		"change-sync-max": published.Milliseconds(published.Percentile(partial, 100)),
	}, nil
}

// proxyService is manyServices' i-th Service and EndpointSlice (datapath/fixtures_test.go).
// For kind NodePort, the Service's nodePort is 20000+i and every other one has
// externalTrafficPolicy Local (manyServicesOfType).
func proxyService(i, perService int, kind corev1.ServiceType) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%05d", i)
	// manyServices starts at 10.96.0.0; the API server refuses the network address and holds
	// 10.96.0.1 for the Service "kubernetes", hence the offset.
	a := i + 2
	ip := fmt.Sprintf("10.%d.%d.%d", 96+a/65536, (a/256)%256, a%256)
	svc := kit.MakeService(name, "default").ClusterIP(ip).Selector(map[string]string{"app": name}).TCPPort("http", 80, 8080).Obj()
	if kind == corev1.ServiceTypeNodePort {
		svc.Spec.Type, svc.Spec.Ports[0].NodePort = kind, int32(20000+i)
		if i%2 == 1 {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
	}
	slice := kit.MakeEndpointSlice(name+"-1", "default").Service(name).ManagedBy("bench-compare").TCPPort("http", 8080)
	for j := range perService {
		k := i*perService + j
		node := fmt.Sprintf("node-%d", k%50) // one endpoint in 50 is on this node ("node-a")
		if k%50 == 0 {
			node = proxyNodeName
		}
		slice.Endpoints(kit.OnNode(kit.ReadyEndpoint(fmt.Sprintf("10.%d.%d.%d", 128+k/65536, (k/256)%256, k%256)), node))
	}
	return svc, slice.Obj()
}

// histogram is the IPv4 series of one kube-proxy histogram.
type histogram struct {
	sum   float64
	count int
}

// awaitSyncs waits until the histogram has counted at least count syncs.
func awaitSyncs(ctx context.Context, kp *process, name string, count int) (histogram, error) {
	ctx, cancel := context.WithTimeout(ctx, proxySyncTimeout)
	defer cancel()
	var h histogram
	err := poll(ctx, func() (bool, error) {
		if err := kp.exited(); err != nil {
			return false, err
		}
		var err error
		h, err = scrapeHistogram(name)
		return err == nil && h.count >= count, nil
	})
	return h, err
}

// scrapeHistogram reads <name>_sum and <name>_count{ip_family="IPv4"} from kube-proxy's metrics.
func scrapeHistogram(name string) (histogram, error) {
	resp, err := http.Get("http://" + proxyMetricsAddr + "/metrics")
	if err != nil {
		return histogram{}, err
	}
	defer resp.Body.Close()
	var h histogram
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `ip_family="IPv4"`) {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, name+"_sum{"):
			h.sum = v
		case strings.HasPrefix(line, name+"_count{"):
			h.count = int(v)
		}
	}
	return h, sc.Err()
}

// kubeProxyTableLines counts the lines of `nft list table ip kube-proxy` in this namespace, and
// saves the listing to path.
func kubeProxyTableLines(path string) (int, error) {
	if err := requirePrivateNetns(); err != nil {
		return 0, err
	}
	out, err := exec.Command("nft", "list", "table", "ip", "kube-proxy").Output()
	if err != nil {
		return 0, fmt.Errorf("nft list table ip kube-proxy: %w", err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return 0, err
	}
	return strings.Count(string(out), "\n"), nil
}
