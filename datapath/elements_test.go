package datapath

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
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
	decl := &SetDecl{Name: "addresses", Type: "ipv4_addr"}
	newTableWithSets(t, table, decl)
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

// recordingElements is an elementWriter that records the operations it is asked to write
// and has next write them.
type recordingElements struct {
	next    elementWriter
	written []loggedOp
}

func (w *recordingElements) write(ctx context.Context, ops []loggedOp, decls map[string]*SetDecl) error {
	w.written = append(w.written, ops...)
	return w.next.write(ctx, ops, decls)
}

// TestNetlinkFillFallsBackFromTheFirstBatchItCannotEncode fills a set netlink can encode
// and one it cannot, in batches of four: the first batch goes through netlink, and
// everything from the batch that reaches the second set on goes through nft.
func TestNetlinkFillFallsBackFromTheFirstBatchItCannotEncode(t *testing.T) {
	requireDatapath(t)
	ctx := context.Background()
	const table = "netlink-fill"
	addresses := &SetDecl{Name: "addresses", Type: "ipv4_addr"}
	macs := &SetDecl{Name: "macs", Type: "ether_addr"} // no netlink encoding
	decls := map[string]*SetDecl{addresses.Name: addresses, macs.Name: macs}
	nft := newTableWithSets(t, table, addresses, macs)
	log := &opLog{}
	for i := range 6 {
		addElement(log, &Element{Set: addresses.Name, Key: []string{fmt.Sprintf("10.0.0.%d", i+1)}})
	}
	addElement(log, &Element{Set: macs.Name, Key: []string{"02:00:00:00:00:01"}})
	fallback := &recordingElements{next: nftElements{nft}}
	writer := newNetlinkElements(knftables.IPv4Family, table, fallback)
	writer.fillOps = 4
	if err := writer.fill(log.ops, decls).commit(ctx); err != nil {
		t.Fatal(err)
	}
	var viaNFT []string
	for _, op := range fallback.written {
		_, key, _, _ := op.element()
		viaNFT = append(viaNFT, key[0])
	}
	if want := []string{"10.0.0.5", "10.0.0.6", "02:00:00:00:00:01"}; !slices.Equal(viaNFT, want) {
		t.Errorf("written through nft: %q, want %q", viaNFT, want)
	}
	out, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v: %s", err, out)
	}
	for _, want := range []string{"10.0.0.1", "10.0.0.4", "10.0.0.6", "02:00:00:00:00:01"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the table lacks %s:\n%s", want, out)
		}
	}
}

// newTableWithSets adds the IPv4 table with the sets to the kernel, for the test's
// duration.
func newTableWithSets(t *testing.T, table string, decls ...*SetDecl) knftables.Interface {
	t.Helper()
	ctx := context.Background()
	nft, err := knftables.New(knftables.IPv4Family, table, knftables.UseNetlink)
	if err != nil {
		t.Fatal(err)
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	for _, decl := range decls {
		addSet(tx, decl)
	}
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
	return nft
}
