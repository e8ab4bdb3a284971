package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo builds the manager and the demo, runs the walkthrough as `make demo` does, checks
// what it shows with real packets, and that nothing is left behind.
func TestDemo(t *testing.T) {
	requireRoot(t)
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run 'make test', or export KUBEBUILDER_ASSETS=$(hack/envtest-assets.sh)")
	}
	bin := t.TempDir()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	build(t, repo, filepath.Join(bin, "kube-clusterip"), ".")
	build(t, repo, filepath.Join(bin, "demo"), "./hack/demo")
	hostNetnsBefore := hostNetns(t)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "demo"), "--manager", filepath.Join(bin, "kube-clusterip"), "--repo", repo)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	t.Logf("make demo output (%s):\n%s", time.Since(start).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("the demo failed: %v", err)
	}
	output := string(out)

	t.Run("requests spread over every backend pod", func(t *testing.T) {
		counts := barCounts(t, section(t, output, "requests to backend-service from the client pod"))
		total := 0
		for _, pod := range backendPodNames {
			if counts[pod] == 0 {
				t.Errorf("%s answered no request: %v", pod, counts)
			}
			total += counts[pod]
		}
		if total != spreadRequests {
			t.Errorf("%d answers counted, want %d: %v", total, spreadRequests, counts)
		}
	})
	t.Run("sticky-service keeps the client on one pod", func(t *testing.T) {
		counts := barCounts(t, section(t, output, "Session affinity"))
		var answering []string
		for pod, n := range counts {
			if n > 0 {
				answering = append(answering, pod)
			}
		}
		if len(answering) != 1 || counts[answering[0]] != stickyRequests {
			t.Errorf("want all %d requests answered by one pod, got %v", stickyRequests, counts)
		}
	})
	t.Run("the selectorless Service reaches the database", func(t *testing.T) {
		if s := section(t, output, "Selectorless Service"); !strings.Contains(s, "greeting from "+databaseIP) {
			t.Errorf("no greeting from %s:\n%s", databaseIP, s)
		}
	})
	t.Run("a not-ready pod leaves the rotation", func(t *testing.T) {
		counts := barCounts(t, section(t, output, "Readiness"))
		if counts["backend-2"] != 0 || counts["backend-1"]+counts["backend-3"] != spreadRequests {
			t.Errorf("want backend-1 and backend-3 to answer all %d requests, backend-2 none: %v", spreadRequests, counts)
		}
	})
	t.Run("CoreDNS answers behind kube-dns and pods get kubelet's resolv.conf and variables", func(t *testing.T) {
		if s := section(t, output, "Cluster DNS"); !strings.Contains(s, "kube-dns EndpointSlice lists it") {
			t.Errorf("kube-dns has no CoreDNS endpoint:\n%s", s)
		}
		s := section(t, output, "What pod/client sees")
		for _, want := range []string{
			"nameserver " + clusterDNSIP,
			"search default.svc.cluster.local svc.cluster.local cluster.local",
			"options ndots:5",
			"BACKEND_SERVICE_SERVICE_HOST=" + serviceIP(t, output, "backend-service"),
			"BACKEND_SERVICE_SERVICE_PORT_HTTP=80",
			"BACKEND_SERVICE_PORT_80_TCP_ADDR=" + serviceIP(t, output, "backend-service"),
			"nslookup kubernetes.default -> 10.96.0.1\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("no %q in:\n%s", want, s)
			}
		}
	})
	t.Run("backend-service by short name, FQDN and environment variable", func(t *testing.T) {
		s := section(t, output, "By name from the client pod")
		ip := regexp.QuoteMeta(serviceIP(t, output, "backend-service"))
		for _, want := range []string{
			`curl http://backend-service  -> resolved ` + ip + `  -> answered backend-\d\n`,
			`curl http://backend-service\.default\.svc\.cluster\.local  -> resolved ` + ip + `  -> answered backend-\d\n`,
			`curl http://\$BACKEND_SERVICE_SERVICE_HOST  \(= http://` + ip + `\)  -> answered backend-\d\n`,
		} {
			if !regexp.MustCompile(want).MatchString(s) {
				t.Errorf("no line matching %s in:\n%s", want, s)
			}
		}
	})
	t.Run("every port of multi-port-service by name", func(t *testing.T) {
		s := section(t, output, "multi-port-service")
		ip := serviceIP(t, output, "multi-port-service")
		for port, target := range map[int]int{80: 8080, 443: 8443, 9090: 9090} {
			want := fmt.Sprintf("curl http://multi-port-service:%d  -> resolved %s  -> answered multi-1 (port %d)\n", port, ip, target)
			if !strings.Contains(s, want) {
				t.Errorf("no %q in:\n%s", want, s)
			}
		}
	})
	t.Run("frontend calls backend-service by name", func(t *testing.T) {
		s := section(t, output, "frontend -> backend")
		want := `curl http://frontend-service  -> resolved ` + regexp.QuoteMeta(serviceIP(t, output, "frontend-service")) + `  -> answered frontend-1 -> backend-\d\n`
		if !regexp.MustCompile(want).MatchString(s) {
			t.Errorf("no line matching %s in:\n%s", want, s)
		}
	})
	t.Run("another namespace by FQDN only; a headless Service resolves to its pods", func(t *testing.T) {
		s := section(t, output, "Another namespace")
		for _, want := range []string{
			"curl http://inventory-service  -> no such host inventory-service\n",
			"curl http://inventory-service.inventory.svc.cluster.local  -> resolved " + serviceIP(t, output, "inventory-service") + "  -> answered inventory-1\n",
		} {
			if !strings.Contains(s, want) {
				t.Errorf("no %q in:\n%s", want, s)
			}
		}
		var podIPs []string
		for _, pod := range backendPodNames {
			ip, _, _ := strings.Cut(lineValue(t, output, "    pod/"+pod+" Ready, podIP "), ",")
			podIPs = append(podIPs, ip)
		}
		slices.Sort(podIPs)
		if want := "nslookup headless-service -> " + strings.Join(podIPs, " ") + "  (pods"; !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	})
	t.Run("no endpoints: connection refused", func(t *testing.T) {
		if s := section(t, output, "Scale backend to zero"); !strings.Contains(s, "connect: connection refused") {
			t.Errorf("no \"connection refused\" after scaling to zero:\n%s", s)
		}
	})
	t.Run("nothing is left behind", func(t *testing.T) {
		if !strings.Contains(output, "cleaned up: no process left") {
			t.Errorf("the demo did not confirm its cleanup")
		}
		workDir := lineValue(t, output, "work directory: ")
		if _, err := os.Stat(workDir); !os.IsNotExist(err) {
			t.Errorf("work directory %s still exists (%v)", workDir, err)
		}
		namespaces := strings.Fields(lineValue(t, output, "demo namespaces: "))
		if len(namespaces) != 3 {
			t.Fatalf("want the demo's net, mnt and pid namespaces, got %q", namespaces)
		}
		if found := processesIn(namespaces, workDir); len(found) > 0 {
			t.Errorf("left behind: %s", strings.Join(found, "; "))
		}
		if after := hostNetns(t); !slices.Equal(after, hostNetnsBefore) {
			t.Errorf("the host's named network namespaces changed: before %v, after %v", hostNetnsBefore, after)
		}
	})
}

// TestRulesetWithoutRoot checks the fallback a user without root sees.
func TestRulesetWithoutRoot(t *testing.T) {
	var out bytes.Buffer
	if err := printRulesetWithoutRoot(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"make demo needs root", "add table ip kube-clusterip", "10.96.0.10", "10.244.0.11", databaseIP} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the ruleset printed without root lacks %q:\n%s", want, out.String())
		}
	}
}

// requireRoot fails without root, unless SKIP_DATAPATH=1 asks to skip tests that need it.
func requireRoot(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network namespaces, nftables)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		missing = append(missing, "the nft binary (apt-get install nftables)")
	}
	if len(missing) == 0 {
		return
	}
	msg := "the demo test needs " + strings.Join(missing, " and ")
	if os.Getenv("SKIP_DATAPATH") == "1" {
		t.Skip(msg)
	}
	t.Fatal(msg + " (set SKIP_DATAPATH=1 to skip)")
}

func build(t *testing.T, repo, output, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", output, pkg)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
}

// hostNetns lists the host's named network namespaces.
func hostNetns(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// section returns the output of the step whose heading contains title.
func section(t *testing.T, output, title string) string {
	t.Helper()
	for _, s := range strings.Split(output, "\n==> ") {
		if heading, _, _ := strings.Cut(s, "\n"); strings.Contains(heading, title) {
			return s
		}
	}
	t.Fatalf("no step %q in the output", title)
	return ""
}

var barLine = regexp.MustCompile(`(?m)^\s+(backend-\d)\s+#*\s+(\d+)$`)

// barCounts reads the per-pod answer counts of a step.
func barCounts(t *testing.T, section string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, m := range barLine.FindAllStringSubmatch(section, -1) {
		n, _ := strconv.Atoi(m[2])
		counts[m[1]] += n
	}
	if len(counts) == 0 {
		t.Fatalf("no answer counts in:\n%s", section)
	}
	return counts
}

// serviceIP is the ClusterIP the demo printed for a Service of any namespace.
func serviceIP(t *testing.T, output, service string) string {
	t.Helper()
	m := regexp.MustCompile(`service/` + regexp.QuoteMeta(service) + ` created(?: in namespace \S+)?, ClusterIP (\S+)`).FindStringSubmatch(output)
	if m == nil {
		t.Fatalf("no ClusterIP printed for service/%s", service)
	}
	return m[1]
}

func lineValue(t *testing.T, output, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(output, "\n") {
		if value, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(value)
		}
	}
	t.Fatalf("no line %q in the output", prefix)
	return ""
}
