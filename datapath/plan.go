package datapath

import (
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// objectIndex flattens fragments into lookups by name (chains, sets) and by set+key
// (elements), which is what a diff compares.
type objectIndex struct {
	chains   map[string]*Chain
	sets     map[string]*SetDecl
	elements map[string]*Element
}

// indexChainsAndSets is indexFragments without the elements (full syncs add those
// straight from the fragments).
func indexChainsAndSets(frags ...*Fragment) objectIndex {
	idx := objectIndex{chains: map[string]*Chain{}, sets: map[string]*SetDecl{}}
	for _, f := range frags {
		for i := range f.Chains {
			idx.chains[f.Chains[i].Name] = &f.Chains[i]
		}
		for i := range f.Sets {
			idx.sets[f.Sets[i].Name] = &f.Sets[i]
		}
	}
	return idx
}

func indexFragments(frags ...*Fragment) objectIndex {
	idx := objectIndex{chains: map[string]*Chain{}, sets: map[string]*SetDecl{}, elements: map[string]*Element{}}
	for _, f := range frags {
		if f == nil {
			continue
		}
		for i := range f.Chains {
			idx.chains[f.Chains[i].Name] = &f.Chains[i]
		}
		for i := range f.Sets {
			idx.sets[f.Sets[i].Name] = &f.Sets[i]
		}
		for i := range f.Elements {
			idx.elements[elementID(&f.Elements[i])] = &f.Elements[i]
		}
	}
	return idx
}

func elementID(e *Element) string {
	return e.Set + " " + strings.Join(e.Key, " . ")
}

// planWriter receives a plan's operations: a knftables Transaction, or an opLog that
// sorts them for the netlink element writer.
type planWriter interface {
	Add(knftables.Object)
	Flush(knftables.Object)
	Delete(knftables.Object)
}

// planFull writes one transaction that makes the table exactly want, whatever it holds
// now (planFullSteps with every step in one transaction).
func planFull(tx planWriter, want *Ruleset, existing existingObjects) {
	planFullSteps(fullSteps{prepare: tx, fill: tx, swap: tx, commit: tx}, want, existing)
}

// fullSteps are the transactions of a full sync, in the order they are committed.
type fullSteps struct {
	prepare planWriter
	// fill takes the elements of the sets and maps the kernel lacks before the sync. No
	// rule the hooks reach refers to them until commit, so they may go in as many
	// transactions as the writer likes (see elementWriter.fill).
	fill planWriter
	// swap takes the elements of the sets and maps the kernel has: one transaction.
	swap   planWriter
	commit planWriter
}

// planFullSteps plans a full sync as transactions that can be committed one after the
// other (elements through netlink, see netlinkElements) without an instant where the
// kernel serves a half-written Service:
//
//   - prepare adds the table, every set and map (adding an existing one changes
//     nothing) and the regular chains the kernel lacks, with their rules. Nothing the
//     kernel's hooks reach refers to them yet.
//   - fill empties (a no-op) and fills every static set and map that prepare added.
//   - swap empties every static set and map the kernel had and fills it again, in one
//     transaction: each Service switches from its old elements to its new ones at once,
//     and the chains they jump to, and the sets those look up, are all in place.
//   - commit writes the base chains and rewrites the regular chains that were already
//     there, then deletes the chains and sets that want lacks. Chains are flushed one by
//     one rather than with `flush table` (whose meaning differs between nft and
//     knftables' Fake).
//
// Dynamic (affinity) sets keep their content, so clients keep their endpoint across a
// resync. If a later step fails, the earlier ones left only unreferenced additions
// (prepare, fill) or the new elements under the old rules (swap); the Proxier forgets
// its model and the retry is a full sync again.
//
// It returns want's set and map declarations, which the element writer needs.
func planFullSteps(steps fullSteps, want *Ruleset, existing existingObjects) map[string]*SetDecl {
	frags := allFragments(want)
	idx := indexChainsAndSets(frags...)
	inKernel := make(map[string]bool, len(existing.chains))
	for _, name := range existing.chains {
		inKernel[name] = true
	}
	prepare, commit := steps.prepare, steps.commit
	prepare.Add(&knftables.Table{})
	for _, name := range sortedKeys(idx.sets) {
		addSet(prepare, idx.sets[name])
	}
	var fresh, rewritten []string
	for _, name := range sortedKeys(idx.chains) {
		if inKernel[name] || idx.chains[name].IsBase() {
			rewritten = append(rewritten, name)
		} else {
			fresh = append(fresh, name)
		}
	}
	addChainsWithRules(prepare, idx.chains, fresh, nil)

	elementsOf := make(map[string]planWriter, len(idx.sets))
	for name := range idx.sets {
		elementsOf[name] = steps.fill
	}
	for _, name := range slices.Concat(existing.sets, existing.maps) {
		if idx.sets[name] != nil {
			elementsOf[name] = steps.swap
		}
	}
	stepOf := func(set string) planWriter {
		if w := elementsOf[set]; w != nil {
			return w
		}
		return steps.swap // undeclared: the writer says so
	}
	for _, name := range sortedKeys(idx.sets) {
		if !idx.sets[name].dynamic() {
			flushSet(stepOf(name), idx.sets[name])
		}
	}
	for _, f := range frags {
		for i := range f.Elements {
			addElement(stepOf(f.Elements[i].Set), &f.Elements[i])
		}
	}
	for _, e := range hairpinElements(want.refs.hairpin) {
		addElement(stepOf(e.Set), &e)
	}

	for _, name := range existing.chains {
		if idx.chains[name] == nil {
			commit.Flush(&knftables.Chain{Name: name})
		}
	}
	// A base chain the kernel lacks is added here, flushed (a no-op) and filled.
	addChainsWithRules(commit, idx.chains, nil, rewritten)
	for _, name := range existing.chains {
		if idx.chains[name] == nil {
			commit.Delete(&knftables.Chain{Name: name})
		}
	}
	for _, name := range existing.sets {
		if idx.sets[name] == nil {
			commit.Delete(&knftables.Set{Name: name})
		}
	}
	for _, name := range existing.maps {
		if idx.sets[name] == nil {
			commit.Delete(&knftables.Map{Name: name})
		}
	}
	return idx.sets
}

// existingObjects names what the kernel's table holds; only full syncs list it.
type existingObjects struct {
	chains, sets, maps []string
}

// planIncremental writes the operations that turn have into want, looking only at the
// base and at the changed Services (whose fragment pointers differ). Of have it reads
// only those and the hairpin use counts of the changed Services' IPs, so have may hold
// just that part (see renderChanges).
//
// Endpoint-map elements that go away are not deleted in the same transaction but
// returned as leftovers, to be deleted by a later sync once held for leftoverHold. The
// kernel swaps generations per lookup, not per packet: a new connection may meet the
// old dispatch verdict ("mod 3") and then the new endpoint map, and index 2 must still
// be there for it. Index N and above are unreachable under the new verdicts, so keeping
// them a while is harmless; a leftover whose index comes back is replaced in place.
func planIncremental(tx planWriter, have, want *Ruleset, changed []types.NamespacedName, leftovers []heldElement, now time.Time) []heldElement {
	oldFrags, newFrags := []*Fragment{have.Base}, []*Fragment{want.Base}
	for _, key := range changed {
		if f := have.Services[key]; f != nil && f != want.Services[key] {
			oldFrags = append(oldFrags, f)
		}
		if f := want.Services[key]; f != nil && f != have.Services[key] {
			newFrags = append(newFrags, f)
		}
	}
	old, next := indexFragments(oldFrags...), indexFragments(newFrags...)
	var kept []heldElement
	for i := range leftovers {
		id := elementID(&leftovers[i].Element)
		if _, readded := next.elements[id]; readded || now.Sub(leftovers[i].since) >= leftoverHold {
			deleteElement(tx, &leftovers[i].Element)
			continue
		}
		kept = append(kept, leftovers[i])
	}
	for _, e := range writeDiff(tx, old, next) {
		kept = append(kept, heldElement{Element: e, since: now})
	}
	writeHairpinDiff(tx, have, want, changed)
	return kept
}

// writeHairpinDiff adds and deletes the hairpin pairs whose use count went from zero
// or to zero, looking only at the IPs of the changed Services.
func writeHairpinDiff(tx planWriter, have, want *Ruleset, changed []types.NamespacedName) {
	seen := map[string]bool{}
	for _, key := range changed {
		for _, f := range []*Fragment{have.Services[key], want.Services[key]} {
			if f == nil {
				continue
			}
			for _, ip := range f.HairpinIPs {
				if seen[ip] {
					continue
				}
				seen[ip] = true
				e := hairpinElement(ip)
				switch before, after := have.refs.hairpin[ip] > 0, want.refs.hairpin[ip] > 0; {
				case before && !after:
					deleteElement(tx, &e)
				case !before && after:
					addElement(tx, &e)
				}
			}
		}
	}
}

// writeDiff orders the operations so that every reference is valid at each step:
// new sets and chains first, then rules, then elements, and removals last.
func writeDiff(tx planWriter, old, want objectIndex) []Element {
	for _, name := range sortedKeys(want.sets) {
		if old.sets[name] == nil {
			addSet(tx, want.sets[name])
		}
	}
	var added, changed []string
	for _, name := range sortedKeys(want.chains) {
		switch prev := old.chains[name]; {
		case prev == nil:
			added = append(added, name)
		case !reflect.DeepEqual(prev, want.chains[name]):
			changed = append(changed, name)
		}
	}
	addChainsWithRules(tx, want.chains, added, changed)
	leftovers := writeElementDiff(tx, old, want)
	removeStale(tx, old, want)
	return leftovers
}

func writeElementDiff(tx planWriter, old, want objectIndex) (leftovers []Element) {
	for _, id := range sortedKeys(old.elements) {
		prev, next := old.elements[id], want.elements[id]
		switch {
		case setRemoved(old, want, prev.Set) || (next != nil && reflect.DeepEqual(prev.Value, next.Value)):
		case next == nil && isEndpointMap(prev.Set):
			leftovers = append(leftovers, *prev)
		default:
			deleteElement(tx, prev)
		}
	}
	for _, id := range sortedKeys(want.elements) {
		if prev := old.elements[id]; prev == nil || !reflect.DeepEqual(prev.Value, want.elements[id].Value) {
			addElement(tx, want.elements[id])
		}
	}
	return leftovers
}

func setRemoved(old, want objectIndex, name string) bool {
	return old.sets[name] != nil && want.sets[name] == nil
}

// removeStale flushes every chain that goes away before deleting any, since one may
// still jump to another, and deletes sets after the rules that used them.
//
// The shared chains (dnat-mod-N and the others of sharedChain) stay: a connection that met a Service's old verdict
// ("goto dnat-mod-3") may enter the chain after the commit, and an emptied chain would
// let it through un-NATed, to be refused. Unused ones cost nothing and go at the next
// full sync; one that comes back is rewritten in place (see addChainsWithRules).
func removeStale(tx planWriter, old, want objectIndex) {
	var gone []string
	for _, name := range sortedKeys(old.chains) {
		if want.chains[name] == nil && !isSharedChain(name) {
			gone = append(gone, name)
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range gone {
		tx.Delete(&knftables.Chain{Name: name})
	}
	for _, name := range sortedKeys(old.sets) {
		if want.sets[name] == nil {
			deleteSet(tx, old.sets[name])
		}
	}
}

// addChainsWithRules adds the added chains, flushes the changed ones, then writes the
// rules of both (all chains exist before any rule can jump to them).
//
// An added shared chain may still be in the kernel with its rules (removeStale keeps
// them), so it is flushed and rewritten like a changed one, in the same transaction.
func addChainsWithRules(tx planWriter, chains map[string]*Chain, added, changed []string) {
	for _, name := range added {
		tx.Add(chainObject(chains[name]))
		if isSharedChain(name) {
			tx.Flush(&knftables.Chain{Name: name})
		}
	}
	for _, name := range changed {
		tx.Add(chainObject(chains[name]))
		tx.Flush(&knftables.Chain{Name: name})
	}
	for _, names := range [][]string{added, changed} {
		for _, name := range names {
			for _, rule := range chains[name].Rules {
				tx.Add(&knftables.Rule{Chain: name, Rule: rule})
			}
		}
	}
}

func chainObject(c *Chain) *knftables.Chain {
	obj := &knftables.Chain{Name: c.Name}
	if c.IsBase() {
		obj.Type, obj.Hook, obj.Priority = knftables.PtrTo(c.Type), knftables.PtrTo(c.Hook), knftables.PtrTo(c.Priority)
	}
	return obj
}

func (s *SetDecl) dynamic() bool {
	for _, f := range s.Flags {
		if f == knftables.DynamicFlag {
			return true
		}
	}
	return false
}

func addSet(tx planWriter, s *SetDecl) {
	var timeout *time.Duration
	if s.Timeout > 0 {
		timeout = knftables.PtrTo(s.Timeout)
	}
	if s.Map {
		tx.Add(&knftables.Map{Name: s.Name, Type: s.Type, TypeOf: s.TypeOf, Flags: s.Flags, Timeout: timeout})
		return
	}
	tx.Add(&knftables.Set{Name: s.Name, Type: s.Type, TypeOf: s.TypeOf, Flags: s.Flags, Timeout: timeout})
}

func flushSet(tx planWriter, s *SetDecl) {
	if s.Map {
		tx.Flush(&knftables.Map{Name: s.Name})
		return
	}
	tx.Flush(&knftables.Set{Name: s.Name})
}

func deleteSet(tx planWriter, s *SetDecl) {
	if s.Map {
		tx.Delete(&knftables.Map{Name: s.Name})
		return
	}
	tx.Delete(&knftables.Set{Name: s.Name})
}

// renderedElementAdder is a planWriter that takes rendered elements as they are (opLog),
// sparing a knftables object per element: a million in a full sync at 100k Services.
type renderedElementAdder interface{ addRendered(e *Element) }

func addElement(tx planWriter, e *Element) {
	if w, ok := tx.(renderedElementAdder); ok {
		w.addRendered(e)
		return
	}
	tx.Add(elementObject(e))
}

func deleteElement(tx planWriter, e *Element) {
	obj := elementObject(e)
	obj.Value = nil
	tx.Delete(obj)
}

func elementObject(e *Element) *knftables.Element {
	if len(e.Value) > 0 {
		return &knftables.Element{Map: e.Set, Key: e.Key, Value: e.Value}
	}
	return &knftables.Element{Set: e.Set, Key: e.Key}
}

func allFragments(rs *Ruleset) []*Fragment {
	out := []*Fragment{rs.Base}
	keys := make([]types.NamespacedName, 0, len(rs.Services))
	for key := range rs.Services {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, compareNamespaceThenName)
	for _, key := range keys {
		out = append(out, rs.Services[key])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
