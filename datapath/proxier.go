package datapath

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/kube-clusterip/kube-clusterip/proxysync"
)

// Proxier keeps one nftables table per IP family in step with the Services and
// EndpointSlices it is given. It is safe for concurrent use.
type Proxier struct {
	cfg Config

	mu       sync.Mutex
	families []*familyState
	inputs   map[types.NamespacedName]serviceInput
	dirty    map[types.NamespacedName]bool // Services updated since the last Apply
	synced   bool                          // Apply ran at least once: there is state to maintain
	// rebalance holds the Services Maintain moves to their own endpoint counts in this sync
	// (see padSlots); any other render keeps the slot counts, so that no change waits for
	// the kernel's validation of the table.
	rebalance map[types.NamespacedName]bool
	stats     Stats
	// sockets are the netlink sockets the Proxier keeps open between syncs (keptSocket);
	// Cleanup closes them.
	sockets []*keptSocket
}

// familyState is what the Proxier knows about one family's table.
type familyState struct {
	family corev1.IPFamily
	nft    knftables.Interface
	// elements writes the element operations of syncs (netlink to the kernel, else nft).
	elements elementWriter
	// committed is the ruleset the kernel holds since the last successful transaction;
	// nil when unknown (never synced, or the last attempt failed).
	committed *Ruleset
	// leftovers are endpoint-map elements the kernel still holds although committed
	// no longer does; they are deleted once held for leftoverHold (see planIncremental).
	leftovers []heldElement
	// padded holds the Services whose committed fragment has padded endpoint slots (see
	// padSlots), since when; Maintain renders them afresh once held for paddingHold.
	padded   map[types.NamespacedName]time.Time
	lastFull time.Time
}

// paddingHold is how long a Service that lost endpoints keeps its slot count, sharing
// the freed slots among the remaining endpoints, before Maintain moves it to its new
// count. Many Services move in one commit, so the kernel's validation of the table (see
// padSlots) is paid once per tick at most, off the path of the change itself.
const paddingHold = time.Second

// leftoverHold is how long a removed endpoint index stays in its map. A lookup that met
// the old dispatch verdict may still be on its way to the map; a packet's way through
// the hooks is far shorter than this, even on a loaded machine.
const leftoverHold = time.Second

// heldElement is an endpoint-map element kept past its removal, since when.
type heldElement struct {
	Element
	since time.Time
}

// expiredLeftovers says whether any leftover has been held long enough to delete.
func (fs *familyState) expiredLeftovers(now time.Time) bool {
	for _, l := range fs.leftovers {
		if now.Sub(l.since) >= leftoverHold {
			return true
		}
	}
	return false
}

// Stats summarises sync attempts for metrics and health checks (proxysync.Stats).
type Stats = proxysync.Stats

// New returns a Proxier for cfg. It does not touch the kernel: the first Sync writes
// the tables.
func New(cfg Config) (*Proxier, error) {
	cfg = cfg.withDefaults()
	// Elements go to the kernel through netlink, unless the caller brought its own nft
	// interface (a Fake): then they go through it too.
	elementsByNetlink := cfg.NewInterface == nil
	if cfg.NewInterface == nil {
		cfg.NewInterface = func(family knftables.Family, table string) (knftables.Interface, error) {
			return knftables.New(family, table, knftables.UseNetlink)
		}
	}
	if cfg.Conntrack == nil {
		cfg.Conntrack = NetlinkConntrack{}
	}
	if cfg.MasqueradeBit < 0 || cfg.MasqueradeBit > 31 {
		return nil, fmt.Errorf("masquerade bit %d is out of range 0-31", cfg.MasqueradeBit)
	}
	p := &Proxier{cfg: cfg, inputs: map[types.NamespacedName]serviceInput{}, dirty: map[types.NamespacedName]bool{},
		rebalance: map[types.NamespacedName]bool{}}
	if p.cfg.CanaryPresent == nil {
		canary := &netlinkCanary{}
		p.sockets = append(p.sockets, &canary.socket)
		p.cfg.CanaryPresent = canary.present
	}
	for _, family := range cfg.IPFamilies {
		nft, err := cfg.NewInterface(NFTFamily(family), cfg.TableName)
		if err != nil {
			return nil, fmt.Errorf("set up nftables for %s (is the nft binary installed?): %w", family, err)
		}
		var elements elementWriter = nftElements{nft}
		if elementsByNetlink {
			byNetlink := newNetlinkElements(NFTFamily(family), cfg.TableName, elements)
			p.sockets = append(p.sockets, &byNetlink.socket)
			elements = byNetlink
		}
		p.families = append(p.families, &familyState{family: family, nft: nft, elements: elements,
			padded: map[types.NamespacedName]time.Time{}})
	}
	return p, nil
}

// Update records the current state of one Service and its EndpointSlices (svc nil: the
// Service is gone). Nothing is written until Apply. This is the O(change) path for an
// event-driven caller; the objects must not be modified afterwards (the Proxier keeps
// them for later full syncs). It tells whether they differ from what was recorded: if
// not, there is nothing to Apply.
func (p *Proxier) Update(key types.NamespacedName, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.update(key, serviceInput{svc: svc, slices: slices})
}

// update records in for key and tells whether it differs from what was recorded.
func (p *Proxier) update(key types.NamespacedName, in serviceInput) bool {
	if in.svc == nil {
		if _, known := p.inputs[key]; known {
			delete(p.inputs, key)
			p.dirty[key] = true
			return true
		}
		return false
	}
	if prev, known := p.inputs[key]; known && prev.sameAs(in) {
		return false
	}
	p.inputs[key] = in
	p.dirty[key] = true
	return true
}

// SetZone records this node's zone (label topology.kubernetes.io/zone) and reports whether
// it changed. The Services whose endpoints carry topology hints are rendered again on the
// next Apply.
func (p *Proxier) SetZone(zone string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if zone == p.cfg.Zone {
		return false
	}
	p.cfg.Zone = zone
	for key, in := range p.inputs {
		if hasHints(in.slices) {
			p.dirty[key] = true
		}
	}
	return true
}

// SetServiceCIDRs records the ranges whose unallocated addresses are dropped and reports
// whether they changed; the next Apply writes them.
func (p *Proxier) SetServiceCIDRs(cidrs []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Equal(cidrs, p.cfg.ServiceCIDRs) {
		return false
	}
	// The base is rendered on every sync, so the next Apply writes the change even when no
	// Service changed.
	p.cfg.ServiceCIDRs = slices.Clone(cidrs)
	return true
}

func hasHints(slices []*discoveryv1.EndpointSlice) bool {
	for _, s := range slices {
		for i := range s.Endpoints {
			if s.Endpoints[i].Hints != nil {
				return true
			}
		}
	}
	return false
}

// Apply writes the Updates recorded since the last Apply: usually only what changed;
// the whole table on the first Apply, after a failure, once per FullSyncPeriod and when
// the table was flushed from outside. On error the kernel keeps the last good ruleset
// and the caller should retry with backoff.
func (p *Proxier) Apply(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncLocked(ctx, "")
}

// Sync makes the tables match services and slices, the complete set the node should
// serve: it Updates every Service that changed or disappeared, then Applies. Objects
// are compared by UID and resourceVersion (objects without one always count as changed).
func (p *Proxier) Sync(ctx context.Context, services []*corev1.Service, slices []*discoveryv1.EndpointSlice) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	grouped := GroupSlices(slices)
	seen := make(map[types.NamespacedName]bool, len(services))
	for _, svc := range services {
		if svc == nil {
			continue
		}
		key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		seen[key] = true
		p.update(key, serviceInput{svc: svc, slices: grouped[key]})
	}
	for key := range p.inputs {
		if !seen[key] {
			p.update(key, serviceInput{})
		}
	}
	return p.syncLocked(ctx, "")
}

// Resync rewrites the whole table of every family from the recorded Services.
func (p *Proxier) Resync(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.synced {
		return nil
	}
	return p.syncLocked(ctx, "requested")
}

// Maintain does the periodic work: a full resync of each family whose table lost its
// canary, whose last sync failed, or whose FullSyncPeriod elapsed, and otherwise the
// deletion of endpoint-map elements the last sync left behind for in-flight lookups
// (so they do not wait for the next change) and the move of Services padded for
// paddingHold to their own endpoint counts (see padSlots). Run calls it every CanaryCheckPeriod;
// callers with their own loop may call it instead of Run.
func (p *Proxier) Maintain(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.synced {
		return nil
	}
	now := p.cfg.Clock.Now()
	if p.markPaddingDue(now) {
		return p.syncLocked(ctx, "")
	}
	var errs []error
	for _, fs := range p.families {
		if reason := p.fullSyncReason(ctx, fs, ""); reason != "" || fs.expiredLeftovers(now) {
			errs = append(errs, p.syncFamily(ctx, fs, reason))
		}
	}
	return p.record(errors.Join(errs...))
}

// markPaddingDue marks the Services padded for paddingHold in any family as updated and
// to be rebalanced, so that the next sync renders them with their own endpoint counts,
// and tells whether there were any.
func (p *Proxier) markPaddingDue(now time.Time) bool {
	due := false
	for _, fs := range p.families {
		for key, since := range fs.padded {
			if now.Sub(since) >= paddingHold {
				p.dirty[key], p.rebalance[key], due = true, true, true
			}
		}
	}
	return due
}

// Run calls Maintain every CanaryCheckPeriod until ctx is done. Errors are reported
// through Stats and OnSync; the next tick retries.
func (p *Proxier) Run(ctx context.Context) {
	ticker := p.cfg.Clock.NewTicker(p.cfg.CanaryCheckPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
			_ = p.Maintain(ctx)
		}
	}
}

// Stats returns a snapshot of the sync statistics.
func (p *Proxier) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Cleanup deletes the Proxier's tables (node shutdown with cleanup, tests) and closes its
// netlink sockets; stop Run first. The recorded Services stay; the next Apply or Sync
// writes the tables again in full.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.synced = false // Maintain must not bring the tables back
	defer func() {
		for _, s := range p.sockets {
			s.close()
		}
	}()
	var errs []error
	for _, fs := range p.families {
		fs.committed, fs.leftovers = nil, nil
		tx := fs.nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		if err := fs.nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("delete %s table %s: %w", fs.family, p.cfg.TableName, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Proxier) syncLocked(ctx context.Context, force string) error {
	p.synced = true
	var errs []error
	for _, fs := range p.families {
		errs = append(errs, p.syncFamily(ctx, fs, p.fullSyncReason(ctx, fs, force)))
	}
	// A family that failed forgot its model and resyncs in full, so the updates are
	// consumed either way.
	clear(p.dirty)
	clear(p.rebalance)
	return p.record(errors.Join(errs...))
}

// record folds the outcome of one round into the stats and returns err.
func (p *Proxier) record(err error) error {
	p.stats.LastAttempt = p.cfg.Clock.Now()
	p.stats.LastError = err
	if err != nil {
		p.stats.ConsecutiveFailures++
		return err
	}
	p.stats.LastSuccess = p.stats.LastAttempt
	p.stats.ConsecutiveFailures = 0
	return nil
}

// fullSyncReason says why the family needs a full sync, or "" if a partial one will do.
func (p *Proxier) fullSyncReason(ctx context.Context, fs *familyState, force string) string {
	switch {
	case force != "":
		return force
	case fs.committed == nil && fs.lastFull.IsZero():
		return "initial"
	case fs.committed == nil:
		return "previous-failure"
	case p.cfg.Clock.Since(fs.lastFull) >= p.cfg.FullSyncPeriod:
		return "period"
	}
	if ok, err := p.cfg.CanaryPresent(ctx, NFTFamily(fs.family), p.cfg.TableName); !ok || err != nil {
		return "canary-missing"
	}
	return ""
}

// syncFamily renders the family's ruleset, writes the full or incremental transaction,
// and on success commits the model and cleans up stale UDP flows.
func (p *Proxier) syncFamily(ctx context.Context, fs *familyState, fullReason string) error {
	start := p.cfg.Clock.Now()
	var err error
	// have is what the kernel holds before the sync: all of it for a full sync, the part
	// the change touches for an incremental one (see renderChanges).
	have, want := fs.committed, (*Ruleset)(nil)
	var changed []types.NamespacedName
	var leftovers []heldElement
	var ops int
	if fullReason != "" {
		want = p.renderAll(fs)
		clear(fs.padded)
		var existing existingObjects
		if existing, err = listExisting(ctx, fs.nft); err == nil {
			ops, err = writeFull(ctx, fs, want, existing)
		}
	} else {
		have, want, changed = p.renderChanges(fs)
		log := &opLog{}
		leftovers = planIncremental(log, have, want, changed, fs.leftovers, start)
		ops, err = len(log.ops), writeIncremental(ctx, fs, log, have, want, changed)
	}
	result := SyncResult{Family: fs.family, Full: fullReason != "", Reason: fullReason, Operations: ops}
	if err != nil {
		// Each transaction is atomic, and a full sync's steps are ordered so that the
		// kernel serves whole Services after any of them (see planFullSteps); forgetting
		// the model makes the retry a full sync that also repairs drift.
		fs.committed = nil
		result.Err = fmt.Errorf("sync %s table %s (%s): %w", fs.family, p.cfg.TableName, syncKind(fullReason), err)
	} else {
		fs.committed, fs.leftovers = want, leftovers
		if fullReason != "" {
			fs.lastFull = start
		}
		result.ServicesUsingHints, result.ServicesIgnoringHints = want.refs.hints[HintsUsed], want.refs.hints[HintsIgnored]
		result.StaleUDPFlowsDeleted, result.ConntrackErr = p.deleteStaleUDPFlows(fs.family, have, want, changed, fullReason != "")
	}
	result.Duration = p.cfg.Clock.Since(start)
	p.count(result)
	if p.cfg.OnSync != nil {
		p.cfg.OnSync(result)
	}
	return result.Err
}

// writeFull commits a full sync in the steps of planFullSteps and returns the number of
// operations.
func writeFull(ctx context.Context, fs *familyState, want *Ruleset, existing existingObjects) (int, error) {
	prepare, commit := fs.nft.NewTransaction(), fs.nft.NewTransaction()
	fill, swap := &opLog{}, &opLog{}
	// The elements go to fill on a node's first sync, to swap on a restart's.
	elements := &fill.ops
	if len(existing.sets)+len(existing.maps) > 0 {
		elements = &swap.ops
	}
	*elements = make([]loggedOp, 0, countElements(want))
	decls := planFullSteps(fullSteps{prepare: prepare, fill: fill, swap: swap, commit: commit}, want, existing)
	ops := prepare.NumOperations() + len(fill.ops) + len(swap.ops) + commit.NumOperations()
	// The fill is encoded while nft adds the sets and chains.
	filling := fillWith(fs.elements, fill.ops, decls)
	if err := fs.nft.Run(ctx, prepare); err != nil {
		filling.discard()
		return ops, fmt.Errorf("add sets and new chains: %w", err)
	}
	if err := filling.commit(ctx); err != nil {
		return ops, fmt.Errorf("fill new sets and maps: %w", err)
	}
	if err := fs.elements.write(ctx, swap.ops, decls); err != nil {
		return ops, fmt.Errorf("write elements: %w", err)
	}
	if err := fs.nft.Run(ctx, commit); err != nil {
		return ops, fmt.Errorf("write base chains and remove stale objects: %w", err)
	}
	return ops, nil
}

// countElements counts the elements of rs, to size a full sync's log at once.
func countElements(rs *Ruleset) int {
	n := len(rs.Base.Elements) + len(rs.refs.hairpin)
	for _, f := range rs.Services {
		n += len(f.Elements)
	}
	return n
}

// writeIncremental commits an incremental sync in one transaction: through the element
// writer when it only changes elements (the usual endpoint change), else through nft.
func writeIncremental(ctx context.Context, fs *familyState, log *opLog, have, want *Ruleset, changed []types.NamespacedName) error {
	switch {
	case len(log.ops) == 0:
		return nil
	case log.onlyElements():
		return fs.elements.write(ctx, log.ops, declsOf(have, want, changed))
	}
	tx := fs.nft.NewTransaction()
	replay(tx, log.ops)
	return fs.nft.Run(ctx, tx)
}

// declsOf declares the sets an incremental sync can touch: the base's and those of the
// changed Services.
func declsOf(have, want *Ruleset, changed []types.NamespacedName) map[string]*SetDecl {
	frags := []*Fragment{have.Base, want.Base}
	for _, key := range changed {
		for _, f := range []*Fragment{have.Services[key], want.Services[key]} {
			if f != nil {
				frags = append(frags, f)
			}
		}
	}
	return indexChainsAndSets(frags...).sets
}

func syncKind(fullReason string) string {
	if fullReason == "" {
		return "partial sync"
	}
	return "full sync, " + fullReason
}

func (p *Proxier) count(r SyncResult) {
	switch {
	case r.Err != nil:
		p.stats.FailedSyncs++
	case r.Full:
		p.stats.FullSyncs++
		p.stats.LastFullSyncDuration = r.Duration
	default:
		p.stats.PartialSyncs++
		p.stats.LastPartialSyncDuration = r.Duration
	}
}

// deleteStaleUDPFlows deletes the conntrack entries of UDP flows whose endpoint no longer
// serves their frontend. A failure is reported, but the sync stands: the next full sync
// walks the table again.
func (p *Proxier) deleteStaleUDPFlows(family corev1.IPFamily, old, want *Ruleset, changed []types.NamespacedName, full bool) (int, error) {
	frontends := udpFrontendsToClean(old, want, changed, full)
	if frontends.Len() == 0 {
		return 0, nil
	}
	n, err := p.cfg.Conntrack.DeleteStaleUDPFlows(family, frontends)
	if err != nil {
		return n, fmt.Errorf("table synced, but stale UDP conntrack entries remain: %w", err)
	}
	return n, nil
}

// listExisting names the chains, sets and maps of the table (netlink, no elements).
func listExisting(ctx context.Context, nft knftables.Interface) (existingObjects, error) {
	var out existingObjects
	for _, l := range []struct {
		kind string
		dst  *[]string
	}{{"chains", &out.chains}, {"sets", &out.sets}, {"maps", &out.maps}} {
		names, err := nft.List(ctx, l.kind)
		if err != nil && !tableMissing(err) {
			return out, fmt.Errorf("list %s: %w", l.kind, err)
		}
		// The kernel names the anonymous sets and maps of rules (vmap { ... }) "__set0",
		// "__map0"...; they go away with their rules and cannot be deleted on their own.
		*l.dst = slices.DeleteFunc(names, func(name string) bool { return strings.HasPrefix(name, "__") })
	}
	return out, nil
}

// tableMissing tells whether a List error only means the table does not exist yet.
// knftables' netlink lister reports that as a bare ENOENT.
func tableMissing(err error) bool {
	return knftables.IsNotFound(err) || errors.Is(err, unix.ENOENT) ||
		strings.Contains(err.Error(), unix.ENOENT.Error())
}
