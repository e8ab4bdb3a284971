package reliability

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/datapath"
)

// renderedTable is the table, next to the agent's, that the renderer's output is written to so
// that the kernel prints both the same way.
const renderedTable = "kube-clusterip-rendered"

// agentConfig is the datapath configuration the suite's manager runs its node agent with (the
// flags of managerProcess.launch), in the node's zone.
func agentConfig(zone string) datapath.Config {
	return datapath.Config{
		NodeName:     nodeName,
		Zone:         zone,
		IPFamilies:   []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
		ClusterCIDRs: []string{"10.244.0.0/16"},
		ServiceCIDRs: []string{"10.96.0.0/12"},
	}
}

// expectKernelTablesRendered checks, for each family, that the agent's table in the kernel is
// what datapath.Render makes of the Services and EndpointSlices in the API server: the renderer's
// output is written, as one transaction, to renderedTable, and both tables are listed by nft and
// compared object by object (rules in order, set and map elements as sets). The only difference
// allowed is one the agent documents: a dnat-mod-N chain no longer used stays until the next full
// sync, and nothing may jump to it. Endpoint-map elements the agent keeps a second for in-flight
// lookups are not allowed: call it in Eventually. It returns the rendered IPv4 table as nft prints it.
func expectKernelTablesRendered(g Gomega, ctx context.Context) string {
	var services corev1.ServiceList
	g.Expect(k8sClient.List(ctx, &services)).To(Succeed())
	var endpointSlices discoveryv1.EndpointSliceList
	g.Expect(k8sClient.List(ctx, &endpointSlices)).To(Succeed())
	node := &corev1.Node{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Name: nodeName}, node)).To(Succeed())
	cfg := agentConfig(node.Labels[corev1.LabelTopologyZone])

	var ipv4 string
	for _, family := range cfg.IPFamilies {
		rs := datapath.Render(cfg, family, pointers(services.Items), pointers(endpointSlices.Items))
		rendered := listRendered(g, ctx, family, rs)
		kernel := listTable(g, family, datapath.DefaultTableName)
		g.Expect(diffTables(kernel, rendered)).To(BeEmpty(),
			"%s table %s in the kernel vs the renderer's output for %d Services and %d EndpointSlices",
			family, datapath.DefaultTableName, len(services.Items), len(endpointSlices.Items))
		if family == corev1.IPv4Protocol {
			ipv4 = rendered.text
		}
	}
	return ipv4
}

func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// listRendered writes the ruleset to renderedTable in one transaction (sets, chains, rules,
// elements, hairpin pairs), lists it, and deletes the table again.
func listRendered(g Gomega, ctx context.Context, family corev1.IPFamily, rs *datapath.Ruleset) nftTable {
	nft, err := knftables.New(datapath.NFTFamily(family), renderedTable)
	g.Expect(err).NotTo(HaveOccurred())
	deleteTable := func() error {
		tx := nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		return nft.Run(ctx, tx)
	}
	g.Expect(deleteTable()).To(Succeed(), "delete a %s table left behind", renderedTable)
	defer func() { g.Expect(deleteTable()).To(Succeed(), "delete %s", renderedTable) }()

	frags := []*datapath.Fragment{rs.Base}
	for _, f := range rs.Services {
		frags = append(frags, f)
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	for _, f := range frags {
		for _, s := range f.Sets {
			tx.Add(setObject(s))
		}
		for _, c := range f.Chains {
			chain := &knftables.Chain{Name: c.Name}
			if c.IsBase() {
				chain.Type, chain.Hook, chain.Priority = &c.Type, &c.Hook, &c.Priority
			}
			tx.Add(chain)
		}
	}
	for _, f := range frags {
		for _, c := range f.Chains {
			for _, rule := range c.Rules {
				tx.Add(&knftables.Rule{Chain: c.Name, Rule: rule})
			}
		}
	}
	for _, f := range frags {
		for _, e := range f.Elements {
			tx.Add(elementObject(e))
		}
	}
	for _, e := range datapath.HairpinElements(rs.Services) {
		tx.Add(elementObject(e))
	}
	g.Expect(nft.Run(ctx, tx)).To(Succeed(), "write the rendered %s ruleset to %s", family, renderedTable)
	return listTable(g, family, renderedTable)
}

func setObject(s datapath.SetDecl) knftables.Object {
	var timeout *time.Duration
	if s.Timeout > 0 {
		timeout = &s.Timeout
	}
	if s.Map {
		return &knftables.Map{Name: s.Name, Type: s.Type, TypeOf: s.TypeOf, Flags: s.Flags, Timeout: timeout}
	}
	return &knftables.Set{Name: s.Name, Type: s.Type, TypeOf: s.TypeOf, Flags: s.Flags, Timeout: timeout}
}

func elementObject(e datapath.Element) *knftables.Element {
	if len(e.Value) > 0 {
		return &knftables.Element{Map: e.Set, Key: e.Key, Value: e.Value}
	}
	return &knftables.Element{Set: e.Set, Key: e.Key}
}

// nftTable is a table as `nft --stateless list table` prints it: its chains, sets and maps by
// "kind name", each with its lines (declarations, rules) in order and its elements sorted (the
// kernel prints a hash set in an order of its own). The elements of dynamic sets are what
// traffic added, not what was rendered, and are left out.
type nftTable struct {
	text    string
	objects map[string]nftObject
}

type nftObject struct {
	lines, elements []string
}

func (o nftObject) String() string {
	s := strings.Join(o.lines, "; ")
	if len(o.elements) > 0 {
		s += "; elements = { " + strings.Join(o.elements, ", ") + " }"
	}
	return "{ " + s + " }"
}

var nftObjectHeader = regexp.MustCompile(`^(chain|set|map) (\S+) \{$`)

// listTable lists a table with nft (stateless: without counters) and parses it.
func listTable(g Gomega, family corev1.IPFamily, table string) nftTable {
	out, err := exec.Command("nft", "--stateless", "list", "table", string(datapath.NFTFamily(family)), table).CombinedOutput()
	g.Expect(err).NotTo(HaveOccurred(), "nft list table %s %s: %s", datapath.NFTFamily(family), table, out)
	t, err := parseNFTTable(string(out))
	g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	return t
}

func parseNFTTable(text string) (nftTable, error) {
	t := nftTable{text: text, objects: map[string]nftObject{}}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "table ") || lines[len(lines)-1] != "}" {
		return t, fmt.Errorf("not one table as nft lists it")
	}
	name, obj := "table", nftObject{} // lines outside chains, sets and maps belong to the table
	var elements *strings.Builder
	for _, line := range lines[1 : len(lines)-1] {
		line = strings.TrimSpace(line)
		switch m := nftObjectHeader.FindStringSubmatch(line); {
		case elements != nil:
			elements.WriteString(" " + line)
		case strings.HasPrefix(line, "elements = {"):
			elements = &strings.Builder{}
			elements.WriteString(strings.TrimPrefix(line, "elements = {"))
		case m != nil:
			t.objects[name] = obj
			name, obj = m[1]+" "+m[2], nftObject{}
		case line == "}":
			t.objects[name] = obj
			name, obj = "table", t.objects["table"]
		case line != "":
			obj.lines = append(obj.lines, line)
		}
		if elements != nil && strings.HasSuffix(line, "}") {
			if !slices.ContainsFunc(obj.lines, func(l string) bool { return strings.HasPrefix(l, "flags ") && strings.Contains(l, "dynamic") }) {
				for _, e := range strings.Split(strings.TrimSuffix(elements.String(), "}"), ",") {
					obj.elements = append(obj.elements, strings.TrimSpace(e))
				}
				slices.Sort(obj.elements)
			}
			elements = nil
		}
	}
	t.objects[name] = obj
	return t, nil
}

// diffTables says how the kernel's table differs from the rendered one, one line per difference.
func diffTables(kernel, rendered nftTable) []string {
	var diffs []string
	for _, name := range slices.Sorted(maps.Keys(rendered.objects)) {
		want := rendered.objects[name]
		have, ok := kernel.objects[name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("the kernel lacks %s %v", name, want))
		case !slices.Equal(have.lines, want.lines):
			diffs = append(diffs, fmt.Sprintf("%s: the kernel has\n\t%s\nthe renderer\n\t%s", name,
				strings.Join(have.lines, "\n\t"), strings.Join(want.lines, "\n\t")))
		}
		for _, e := range missing(want.elements, have.elements) {
			diffs = append(diffs, fmt.Sprintf("%s: the kernel lacks element %s", name, e))
		}
		for _, e := range missing(have.elements, want.elements) {
			diffs = append(diffs, fmt.Sprintf("%s: the kernel has element %s, which the renderer does not", name, e))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(kernel.objects)) {
		if _, ok := rendered.objects[name]; !ok && !unusedDNATChain(kernel, name) {
			diffs = append(diffs, fmt.Sprintf("the kernel has %s, which the renderer does not: %v", name, kernel.objects[name]))
		}
	}
	return diffs
}

// unusedDNATChain says whether name is a dnat-mod-N chain that nothing in the table jumps to.
func unusedDNATChain(t nftTable, name string) bool {
	chain, ok := strings.CutPrefix(name, "chain ")
	if !ok || !strings.HasPrefix(chain, "dnat-mod-") {
		return false
	}
	use := regexp.MustCompile(`(goto|jump) ` + regexp.QuoteMeta(chain) + `($|[^-\w])`)
	for other, obj := range t.objects {
		if other != name && slices.ContainsFunc(slices.Concat(obj.lines, obj.elements), use.MatchString) {
			return false
		}
	}
	return true
}

// missing lists the items of a that b lacks.
func missing(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
