package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"

	"github.com/kube-clusterip/kube-clusterip/test/netnstest"
)

// As root the suite runs in a network namespace of its own: TestMain re-executes the test
// binary with CLONE_NEWNET, so the control plane and the manager talk over the private
// loopback, and the manager's datapath programs only the private namespace's nftables. A veth
// interface there holds localPodIP, the address of the one "pod" that really serves, and the
// default route (which covers the Service range). Nothing touches the host's network or nftables.
const inPrivateNetnsEnv = "KUBE_CLUSTERIP_RELIABILITY_IN_PRIVATE_NETNS"

// localPodIP is the pod IP the suite itself serves HTTP on, inside the private namespace.
const localPodIP = "10.244.255.1"

// servedPodIPs is how many further pod IPs the private namespace holds (servedPodIP(0) to
// servedPodIP(servedPodIPs-1)), for scenarios whose Service has several endpoints that answer.
const servedPodIPs = 10

// servedPodIP is the i-th further pod IP of the private namespace, outside what uniquePodIP
// hands out in any run of the suite.
func servedPodIP(i int) string { return fmt.Sprintf("10.244.254.%d", i+1) }

func TestMain(m *testing.M) {
	if netnstest.Fuzzing() {
		// FuzzEndpoints needs no network: fuzz where the test binary was started.
		os.Exit(m.Run())
	}
	os.Exit(netnstest.Main(inPrivateNetnsEnv, "reliability", setUpPrivateNetns, m.Run))
}

// setUpPrivateNetns brings up loopback, and a veth pair (both ends here) with localPodIP, the
// servedPodIPs and the route to the Service range (so that connections to ClusterIPs reach the
// output hook).
func setUpPrivateNetns() error {
	commands := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "kcip0", "type", "veth", "peer", "name", "kcip0p"},
		{"link", "set", "kcip0", "up"},
		{"link", "set", "kcip0p", "up"},
		{"addr", "add", localPodIP + "/32", "dev", "kcip0"},
		// A default route: kube-apiserver picks its advertise address from it; it covers the
		// Service range too.
		{"route", "add", "default", "dev", "kcip0"},
	}
	for i := range servedPodIPs {
		commands = append(commands, []string{"addr", "add", servedPodIP(i) + "/32", "dev", "kcip0"})
	}
	for _, args := range commands {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// datapathMissing says what the datapath checks lack (root, nft, the private namespace), or "".
func datapathMissing() string { return netnstest.Missing(inPrivateNetnsEnv) }

var _ = Describe("the suite's datapath checks", func() {
	It("have what they need: root, nft and a private network namespace", func() {
		missing := datapathMissing()
		if missing == "" {
			return
		}
		msg := "the datapath part of the API server restart scenario needs " + missing
		if os.Getenv("SKIP_DATAPATH") == "1" {
			Skip(msg)
		}
		Fail(msg + " (set SKIP_DATAPATH=1 to skip)")
	})
})
