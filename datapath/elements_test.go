package datapath

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"
)

// failingElements is an elementWriter that fails while failure is set, writing nothing.
type failingElements struct {
	elementWriter
	failure error
}

func (w *failingElements) write(ctx context.Context, ops []loggedOp, decls map[string]*SetDecl) error {
	if w.failure != nil {
		return w.failure
	}
	return w.elementWriter.write(ctx, ops, decls)
}

// failElements makes p's element writes fail while the returned writer's failure is set.
func failElements(p *Fake, err error) *failingElements {
	fs := p.families[0]
	w := &failingElements{elementWriter: fs.elements, failure: err}
	fs.elements = w
	return w
}

func TestProxierFirstSyncFailingAtTheElementsHooksNothing(t *testing.T) {
	p, fake, _ := fakeProxier(t, Config{})
	svc, slice := seedBackend()
	ctx := context.Background()
	w := failElements(p, errors.New("netlink batch rejected"))
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err == nil {
		t.Fatal("want the element writer's error back")
	}
	// The first step added sets and regular chains, which no hook reaches: base chains
	// come with the last step.
	for _, chain := range fake.Table.Chains {
		if chain.Hook != nil {
			t.Errorf("base chain %s was written before the elements", chain.Name)
		}
	}
	w.failure = nil
	if err := p.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	want, _, _ := fakeProxier(t, Config{})
	if err := want.Sync(ctx, []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{slice}); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(), want.Table(corev1.IPv4Protocol).Dump(); got != want {
		t.Errorf("the retry left a different table\n--- got ---\n%s\n--- want ---\n%s", got, want)
	}
}

// TestNetlinkElementBatchIsAtomic has the kernel reject the last operation of a batch and
// checks that the earlier ones were not applied either.
func TestNetlinkElementBatchIsAtomic(t *testing.T) {
	requireDatapath(t)
	ctx := context.Background()
	const table = "netlink-atomic"
	nft, err := knftables.New(knftables.IPv4Family, table, knftables.UseNetlink)
	if err != nil {
		t.Fatal(err)
	}
	decl := &SetDecl{Name: "addresses", Type: "ipv4_addr"}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	addSet(tx, decl)
	if err := nft.Run(ctx, tx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil {
			t.Errorf("delete table: %v", err)
		}
	})
	log := &opLog{}
	addElement(log, &Element{Set: decl.Name, Key: []string{"10.0.0.1"}})
	deleteElement(log, &Element{Set: decl.Name, Key: []string{"10.0.0.2"}}) // not there: ENOENT
	writer := newNetlinkElements(knftables.IPv4Family, table, refuseFallback{})
	if err := writer.write(ctx, log.ops, map[string]*SetDecl{decl.Name: decl}); err == nil {
		t.Fatal("the kernel accepted the deletion of a missing element")
	}
	out, err := exec.Command("nft", "list", "set", "ip", table, decl.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list set: %v: %s", err, out)
	}
	if strings.Contains(string(out), "10.0.0.1") {
		t.Errorf("the batch was applied in part:\n%s", out)
	}
}
