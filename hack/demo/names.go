package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-clusterip/kube-clusterip/diagnose"
	"github.com/kube-clusterip/kube-clusterip/test/clusterdns"
)

// The walkthrough by name: CoreDNS answers from our Services and EndpointSlices, and the client
// pod's processes resolve names through their resolv.conf, as a container's would.

// startClusterDNS creates kube-dns, starts CoreDNS on the node's address and its pod.
func (d *demo) startClusterDNS(ctx context.Context) error {
	if err := d.createService(ctx, kubeDNSService()); err != nil {
		return err
	}
	logs, err := os.Create(filepath.Join(d.workDir, "coredns.log"))
	if err != nil {
		return err
	}
	d.coreDNS, err = clusterdns.Start(ctx, clusterdns.Config{
		Kubeconfig: d.controlPlane.kubeconfig, DNSAddress: net.JoinHostPort(uplinkNodeIP, "53"), ClusterDomain: clusterDomain, Log: logs,
	})
	if err != nil {
		return fmt.Errorf("CoreDNS (log: %s): %w", logs.Name(), err)
	}
	fmt.Printf("    coredns pid %d: listening on %s, kubernetes plugin for %s through the API server (log: %s)\n",
		d.coreDNS.Pid(), d.coreDNS.DNSAddress, clusterDomain, logs.Name())
	pod := coreDNSPod()
	if _, err := d.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if err := waitFor(ctx, 20*time.Second, d.readyEndpointsIn(metav1.NamespaceSystem, "kube-dns", 1)); err != nil {
		return fmt.Errorf("kube-dns endpoints: %w", err)
	}
	fmt.Printf("    pod/coredns (hostNetwork, %s) Ready; kube-dns EndpointSlice lists it for dns 53/UDP and dns-tcp 53/TCP\n", uplinkNodeIP)
	return nil
}

// createService creates svc and remembers its ClusterIP.
func (d *demo) createService(ctx context.Context, svc *corev1.Service) error {
	created, err := d.client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	d.clusterIPs[svc.Name] = created.Spec.ClusterIP
	where := ""
	if svc.Namespace != metav1.NamespaceDefault {
		where = " in namespace " + svc.Namespace
	}
	fmt.Printf("    service/%s created%s, ClusterIP %s\n", svc.Name, where, created.Spec.ClusterIP)
	return nil
}

// showPodNames prints the client pod's resolv.conf and its Service variables, and waits until
// the cluster DNS answers it through kube-dns's ClusterIP.
func (d *demo) showPodNames(ctx context.Context) error {
	client := d.clientSandbox()
	conf, err := os.ReadFile(client.resolvConf)
	if err != nil {
		return err
	}
	fmt.Printf("    /etc/resolv.conf (its own mount namespace):\n")
	for _, line := range strings.Split(strings.TrimSpace(string(conf)), "\n") {
		fmt.Printf("      %s\n", line)
	}
	fmt.Printf("    environment, Services of namespace default that existed when it started:\n")
	for _, v := range client.env {
		if strings.HasPrefix(v, "BACKEND_SERVICE_") || strings.HasPrefix(v, "KUBERNETES_SERVICE_HOST=") {
			fmt.Printf("      %s\n", v)
		}
	}
	var result podResult
	err = waitFor(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
		results, err := client.exec(ctx, podProcess{Lookup: []string{"kubernetes.default"}})
		if err != nil {
			return false, err
		}
		result = results[0]
		return result.Error == "", nil
	})
	if err != nil {
		return fmt.Errorf("kubernetes.default does not resolve from the client pod (last: %s): %w", result.Error, err)
	}
	fmt.Printf("    nslookup kubernetes.default -> %s\n", strings.Join(result.Addresses, " "))
	fmt.Printf("    ✔ the client pod resolves through kube-dns %s\n", clusterDNSIP)
	return nil
}

// curlByName fetches backend-service by its short name, its FQDN and its environment variable.
func (d *demo) curlByName(ctx context.Context) error {
	urls := []string{"http://backend-service", "http://backend-service.default.svc.cluster.local", "http://$BACKEND_SERVICE_SERVICE_HOST"}
	results, err := d.clientSandbox().exec(ctx, podProcess{Get: urls})
	if err != nil {
		return err
	}
	printFetches(results)
	for _, r := range results {
		if err := expectAnswer(r, d.clusterIPs["backend-service"], backendPodNames...); err != nil {
			return err
		}
	}
	fmt.Printf("    ✔ backend-service by name: CoreDNS answered its ClusterIP, a backend pod answered\n")
	return nil
}

// curlMultiPort fetches every port of multi-port-service by name.
func (d *demo) curlMultiPort(ctx context.Context) error {
	var urls, want []string
	for _, p := range multiPortPorts {
		urls = append(urls, fmt.Sprintf("http://multi-port-service:%d", p.port))
		want = append(want, fmt.Sprintf("%s (port %d)", multiPortPodName, p.targetPort))
	}
	results, err := d.clientSandbox().exec(ctx, podProcess{Get: urls})
	if err != nil {
		return err
	}
	printFetches(results)
	for i, r := range results {
		if err := expectAnswer(r, d.clusterIPs["multi-port-service"], want[i]); err != nil {
			return err
		}
	}
	fmt.Printf("    ✔ every port of multi-port-service reached its targetPort (plain HTTP on each)\n")
	return nil
}

// curlFrontend fetches frontend-service, whose pod fetches backend-service by name itself.
func (d *demo) curlFrontend(ctx context.Context) error {
	results, err := d.clientSandbox().exec(ctx, podProcess{Get: []string{"http://frontend-service"}})
	if err != nil {
		return err
	}
	printFetches(results)
	var want []string
	for _, pod := range backendPodNames {
		want = append(want, frontendPodName+" -> "+pod)
	}
	if err := expectAnswer(results[0], d.clusterIPs["frontend-service"], want...); err != nil {
		return err
	}
	fmt.Printf("    ✔ frontend-1 resolved backend-service through its own resolv.conf and reached a backend pod\n")
	return nil
}

// otherNamespaceAndHeadless shows that a short name stays in the pod's namespace, the FQDN
// reaches another, and a headless Service's name is its ready pods' addresses.
func (d *demo) otherNamespaceAndHeadless(ctx context.Context) error {
	fqdn := "http://inventory-service." + otherNamespace + ".svc.cluster.local"
	results, err := d.clientSandbox().exec(ctx, podProcess{
		Get:    []string{"http://inventory-service", fqdn},
		Lookup: []string{"headless-service"},
	})
	if err != nil {
		return err
	}
	headless, fetches := results[0], results[1:]
	printFetches(fetches)
	if !strings.HasPrefix(fetches[0].Error, "no such host") {
		return fmt.Errorf("the short name inventory-service resolved from namespace default: %+v", fetches[0])
	}
	if err := expectAnswer(fetches[1], d.clusterIPs["inventory-service"], inventoryPodName); err != nil {
		return err
	}
	fmt.Printf("    ✔ a short name searches the pod's namespace first; the FQDN reaches namespace %s\n", otherNamespace)

	var want []string
	for _, pod := range backendPodNames {
		want = append(want, d.podIPs[pod])
	}
	diagnose.SortAddresses(want)
	fmt.Printf("    nslookup headless-service -> %s  (pods %s)\n", strings.Join(headless.Addresses, " "), strings.Join(backendPodNames, ", "))
	if headless.Error != "" || !slices.Equal(headless.Addresses, want) {
		return fmt.Errorf("headless-service resolved to %v (%s), want the backend pods' %v", headless.Addresses, headless.Error, want)
	}
	fmt.Printf("    ✔ headless-service (clusterIP: None) resolves to its ready pods' addresses\n")
	return nil
}

// printFetches prints one line per fetch: what was asked, what DNS said, who answered.
func printFetches(results []podResult) {
	for _, r := range results {
		line := "    curl " + r.Request
		if r.Expanded != r.Request {
			line += "  (= " + r.Expanded + ")"
		}
		if len(r.Addresses) > 0 {
			line += "  -> resolved " + strings.Join(r.Addresses, " ")
		}
		if r.Error != "" {
			line += "  -> " + r.Error
		} else {
			line += "  -> answered " + r.Answer
		}
		fmt.Println(line)
	}
}

// expectAnswer checks that a fetch reached clusterIP (by name, or as the URL's address) and was
// answered with one of answers.
func expectAnswer(r podResult, clusterIP string, answers ...string) error {
	if r.Error != "" {
		return fmt.Errorf("curl %s: %s", r.Request, r.Error)
	}
	if len(r.Addresses) > 0 && !slices.Equal(r.Addresses, []string{clusterIP}) {
		return fmt.Errorf("curl %s: resolved to %v, want the ClusterIP %s", r.Request, r.Addresses, clusterIP)
	}
	if len(r.Addresses) == 0 && !strings.Contains(r.Expanded, clusterIP) {
		return fmt.Errorf("curl %s: went to %s, not to the ClusterIP %s", r.Request, r.Expanded, clusterIP)
	}
	if !slices.Contains(answers, r.Answer) {
		return fmt.Errorf("curl %s: answered %q, want one of %q", r.Request, r.Answer, answers)
	}
	return nil
}
