// Package proxysync holds what the node's datapath reports about its syncs: one Result per sync
// attempt of a family's table, and Stats over all of them. They are plain values, so that the node
// agent (a control loop) reads them without importing the kernel-facing datapath package.
package proxysync

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Result describes one sync attempt of one family's table.
type Result struct {
	Family corev1.IPFamily
	// Full is true when the whole table was rewritten (first sync, period, outside
	// change detected, or the previous attempt failed).
	Full bool
	// Reason says why a full sync ran ("initial", "period", "canary-missing",
	// "previous-failure", "requested"); empty for partial syncs.
	Reason     string
	Duration   time.Duration
	Operations int // nft operations in the transaction (0: nothing changed)
	// StaleUDPFlowsDeleted counts conntrack entries removed after the sync (see datapath.UDPFrontends).
	StaleUDPFlowsDeleted int
	// ServicesUsingHints and ServicesIgnoringHints count, after a successful sync, the
	// Services in the table whose topology hints steer their traffic on this node, and
	// those whose hints this node cannot use (see datapath.HintUse).
	ServicesUsingHints, ServicesIgnoringHints int
	// Err is why the sync failed (the kernel kept the last good ruleset).
	Err error
	// ConntrackErr is why deleting stale UDP conntrack entries failed after a successful
	// sync: logged and counted, not a failed sync.
	ConntrackErr error
}

// Stats summarises sync attempts for metrics and health checks.
type Stats struct {
	LastAttempt             time.Time
	LastSuccess             time.Time
	LastError               error // nil after a successful sync
	ConsecutiveFailures     int
	FullSyncs, PartialSyncs uint64 // successful syncs, per kind, summed over families
	FailedSyncs             uint64
	LastFullSyncDuration    time.Duration
	LastPartialSyncDuration time.Duration
}
