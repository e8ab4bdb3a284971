package datapath

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/test/procstat"
)

// realNFT hands rendered transactions to the nft binary, so the kernel validates them.
// It commits them, which validates all that nft -c does and more: a check, whose abort
// waits in the kernel, took 3 to 4 times as long. It is only ever made in the private
// network namespace TestMain re-executed the test binary into, so the host's ruleset
// is never touched. Fuzz workers share that namespace; each process writes tables of
// its own name.
type realNFT struct {
	path     string
	table    string
	families []corev1.IPFamily
	tables   map[corev1.IPFamily]knftables.Interface // lists the tables (netlink)
	// accepted holds the hashes of the full and incremental syncs the kernel accepted.
	accepted map[[sha256.Size]byte]bool
}

// newRealNFT returns the real nft for the families' tables, or nil and why it cannot be
// used here.
func newRealNFT(families []corev1.IPFamily) (*realNFT, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("not root")
	}
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, errors.New("no nft binary (apt-get install nftables)")
	}
	if err := checkPrivateNetns(); err != nil {
		return nil, err
	}
	n := &realNFT{path: path, table: fmt.Sprintf("fuzz-%d", os.Getpid()), families: families,
		tables: map[corev1.IPFamily]knftables.Interface{}, accepted: map[[sha256.Size]byte]bool{}}
	for _, family := range families {
		if n.tables[family], err = knftables.New(NFTFamily(family), n.table, knftables.UseNetlink); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// checkPrivateNetns makes sure this process is in a network namespace the test binary
// made for itself: TestMain's re-exec marks it with inPrivateNetnsEnv, and an ancestor
// running the same executable (the one that re-executed itself; for a fuzz worker, the
// coordinator's parent) is in a different namespace.
func checkPrivateNetns() error {
	if os.Getenv(inPrivateNetnsEnv) != "1" {
		return errors.New("not in a private network namespace (TestMain re-exec with CLONE_NEWNET)")
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	if initNS, err := os.Readlink("/proc/1/ns/net"); err == nil && initNS == self {
		return fmt.Errorf("network namespace %s is pid 1's", self)
	}
	exe, err := os.Stat("/proc/self/exe")
	if err != nil {
		return err
	}
	for pid := os.Getppid(); pid > 1; pid = parentPID(pid) {
		proc := "/proc/" + strconv.Itoa(pid)
		parentExe, err := os.Stat(proc + "/exe")
		if err != nil || !os.SameFile(exe, parentExe) {
			break
		}
		if ns, err := os.Readlink(proc + "/ns/net"); err == nil && ns != self {
			return nil
		}
	}
	return fmt.Errorf("network namespace %s is also the one the test binary started in", self)
}

// parentPID returns the parent of pid, or 0 when it cannot be read.
func parentPID(pid int) int {
	stat, err := procstat.Read(pid)
	if err != nil {
		return 0
	}
	return stat.PPID
}

// fullSyncTo commits, in one transaction, a full sync of each family's table to its
// ruleset over whatever the table holds, as the Proxier's full sync does.
func (n *realNFT) fullSyncTo(rulesets map[corev1.IPFamily]*Ruleset) error {
	var script strings.Builder
	for _, family := range n.families {
		nft := n.tables[family]
		existing, err := listExisting(context.Background(), nft)
		if err != nil {
			return err
		}
		tx := nft.NewTransaction()
		planFull(tx, rulesets[family], existing)
		script.WriteString(tx.String())
	}
	if err := n.run(script.String()); err != nil {
		return fmt.Errorf("%w\n%s", err, &script)
	}
	return nil
}

// commitSyncs has the kernel commit full over tables that hold the empty rulesets, then
// incremental, and brings the empty rulesets back when t ends. A pair the kernel
// accepted before is not sent again: the fuzzer's mutator and minimizer often render
// the same transactions from different bytes.
func (n *realNFT) commitSyncs(t *testing.T, full, incremental string, empty map[corev1.IPFamily]*Ruleset) {
	t.Helper()
	key := sha256.Sum256([]byte(full + "\x00" + incremental))
	if n.accepted[key] {
		return
	}
	if err := n.run(full); err != nil {
		t.Fatalf("kernel rejected the full sync: %v\n%s", err, full)
	}
	t.Cleanup(func() {
		if err := n.fullSyncTo(empty); err != nil {
			t.Errorf("kernel rejected the full sync back to an empty cluster: %v", err)
		}
	})
	if err := n.run(incremental); err != nil {
		t.Fatalf("kernel rejected the incremental sync: %v\n%s\nafter the full sync\n%s", err, incremental, full)
	}
	if len(n.accepted) >= maxAcceptedSyncs {
		clear(n.accepted)
	}
	n.accepted[key] = true
}

// maxAcceptedSyncs bounds the memory of accepted pairs (a few MB of hashes).
const maxAcceptedSyncs = 1 << 16

// drop deletes this process's tables, if any.
func (n *realNFT) drop() error {
	var script strings.Builder
	for _, family := range n.families {
		fmt.Fprintf(&script, "add table %[1]s %[2]s\ndelete table %[1]s %[2]s\n", NFTFamily(family), n.table)
	}
	return n.run(script.String())
}

// run commits script with nft -f.
func (n *realNFT) run(script string) error {
	if script == "" {
		return nil
	}
	return nftScript(n.path, script)
}

// nftScript commits script with the nft binary at path (nft -f -), in this process's
// namespace (requireDatapath: the test's private one).
func nftScript(path, script string) error {
	cmd := exec.Command(path, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft %s: %w: %s", strings.Join(cmd.Args[1:], " "), err, stderr.String())
	}
	return nil
}

// netlinkMatchesText has the kernel commit a full sync to each family's ruleset into fresh
// tables of their own: once as one nft transaction, and as the Proxier writes it (the
// elements through netlink, the first sync's as a fill) both in batches of the usual
// size and of a few elements, which cut runs of one set and messages between batches. It
// fails t unless nft lists the same table every time, or if the netlink writer had to
// fall back to nft.
func (n *realNFT) netlinkMatchesText(t *testing.T, rulesets map[corev1.IPFamily]*Ruleset) {
	t.Helper()
	ctx := context.Background()
	for _, family := range n.families {
		var listings []string
		for _, how := range []struct {
			name    string
			fillOps int // 0: written by nft
		}{{"text", 0}, {"netlink", fillBatchOps}, {"netlink-small-batches", 7}} {
			table := n.table + "-" + how.name
			nft, err := knftables.New(NFTFamily(family), table, knftables.UseNetlink)
			if err != nil {
				t.Fatal(err)
			}
			if how.fillOps == 0 {
				tx := nft.NewTransaction()
				planFull(tx, rulesets[family], existingObjects{})
				err = nft.Run(ctx, tx)
			} else {
				elements := newNetlinkElements(NFTFamily(family), table, refuseFallback{})
				elements.fillOps = how.fillOps
				fs := &familyState{family: family, nft: nft, elements: elements}
				_, err = writeFull(ctx, fs, rulesets[family], existingObjects{})
			}
			if err != nil {
				t.Fatalf("%s full sync of %s table: %v", how.name, family, err)
			}
			listing, err := n.stableListing(family, table)
			if err != nil {
				t.Fatal(err)
			}
			listings = append(listings, sortedElements(strings.ReplaceAll(listing, table, "TABLE")))
			if err := n.run(fmt.Sprintf("delete table %s %s\n", NFTFamily(family), table)); err != nil {
				t.Fatal(err)
			}
			if listings[0] != listings[len(listings)-1] {
				t.Fatalf("%s: the table written through %s differs from the one nft wrote\n--- nft:\n%s\n--- %s:\n%s",
					family, how.name, listings[0], how.name, listings[len(listings)-1])
			}
		}
	}
}

// stableListing lists table until two listings in a row agree. The fuzz workers share one
// network namespace, and nft's listing can run into another worker's commit: nft 1.0.6 then
// once listed a table's base chains twice (CI, 2026-12-07), which no table can hold.
func (n *realNFT) stableListing(family corev1.IPFamily, table string) (string, error) {
	var last string
	for range 5 {
		out, err := exec.Command(n.path, "list", "table", string(NFTFamily(family)), table).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nft list table %s: %w: %s", table, err, out)
		}
		if string(out) == last {
			return last, nil
		}
		last = string(out)
	}
	return "", fmt.Errorf("nft list table %s: no two listings in a row agreed in 5; the last:\n%s", table, last)
}

// refuseFallback fails the netlink writer's fallback to nft, to show it was needed.
type refuseFallback struct{}

func (refuseFallback) write(context.Context, []loggedOp, map[string]*SetDecl) error {
	return errors.New("the netlink writer fell back to nft")
}

// elementsBlock matches the elements of a set or map in nft's listing.
var elementsBlock = regexp.MustCompile(`elements = \{[^}]*\}`)

// sortedElements sorts the elements of every set and map in an nft listing: the kernel
// lists a hash set in the order of its buckets, which differs between two tables.
func sortedElements(listing string) string {
	return elementsBlock.ReplaceAllStringFunc(listing, func(block string) string {
		inner := strings.TrimSuffix(strings.TrimPrefix(block, "elements = {"), "}")
		elems := strings.Split(inner, ",")
		for i := range elems {
			elems[i] = strings.Join(strings.Fields(elems[i]), " ")
		}
		sort.Strings(elems)
		return "elements = { " + strings.Join(elems, ", ") + " }"
	})
}

// TestNetlinkElementsMatchNFT has the kernel hold the same table whether the elements
// went through netlink or through nft, for every kind of set and map the renderer
// declares: ClusterIPs and NodePorts (both traffic policies), several ports, UDP,
// affinity, external IPs, Services without endpoints, IPv6.
func TestNetlinkElementsMatchNFT(t *testing.T) {
	requireDatapath(t)
	families := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	n, err := newRealNFT(families)
	if err != nil {
		t.Fatal(err)
	}
	n.table = "netlink-check"
	services, slices := manyServicesOfType(corev1.ServiceTypeNodePort, 20, 12)
	for _, seed := range []func() (*corev1.Service, *discoveryv1.EndpointSlice){
		seedMultiPort, seedSticky, seedExternalDatabase, seedNoEndpoints, seedLocalElsewhere, seedTerminating, seedUDP, seedIPv6,
	} {
		svc, slice := seed()
		services, slices = append(services, svc), append(slices, slice)
	}
	cfg := Config{NodeName: "node-a", ClusterCIDRs: []string{clusterCIDRv4, clusterCIDRv6}, ServiceCIDRs: []string{serviceCIDRv4, serviceCIDRv6},
		NodePortAddresses: []string{nodeIP, nodeIPv6}, NodeIPs: []string{nodeIP}}
	rulesets := map[corev1.IPFamily]*Ruleset{}
	for _, family := range families {
		rulesets[family] = Render(cfg, family, services, slices)
	}
	n.netlinkMatchesText(t, rulesets)
}
