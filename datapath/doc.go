// Package datapath programs a node's nftables so that packets sent to a Service's
// ClusterIP reach one of its endpoints.
//
// The package has a pure core and a thin shell:
//
//   - ServicePortEndpoints and RenderService/RenderBase/Render turn Services and
//     EndpointSlices into a Ruleset, a plain description of the desired table for one
//     IP family. They touch nothing outside their arguments.
//   - Proxier keeps an in-memory model of what it last committed, writes only the
//     difference in one knftables transaction per family, notices when the table was
//     flushed or deleted from outside (a canary rule, checked over netlink), resyncs
//     fully on a period, and deletes stale UDP conntrack entries.
//
// ServicePortEndpoints picks endpoints as kube-proxy does: ready ones (else serving and
// terminating ones), narrowed by topology hints to this node (Config.NodeName) or its zone
// (Config.Zone, Proxier.SetZone) only when every ready endpoint carries a hint and one is for
// here; internalTrafficPolicy: Local keeps this node's endpoints and ignores hints.
//
// A reconciler calls Update(key, svc, slices) per Service event and then Apply(ctx)
// (O(change)), or Sync(ctx, services, slices) with the complete lists; it runs
// Run(ctx) for the canary check and periodic full resync; it reads Stats() and gets a
// SyncResult per family and attempt through Config.OnSync.
//
// Layout of one table (`ip kube-clusterip` or `ip6 kube-clusterip`):
//
//	nat-prerouting, nat-output (dstnat)  -> services: vmap @service-ips on daddr . l4proto . dport
//	    Services without affinity         -> dnat-mod-N: dnat through the shared map
//	                                         @service-endpoints-<proto>, keyed by
//	                                         daddr . dport . numgen random mod N
//	    Services with ClientIP affinity   -> service-HASH-ns/name/proto/port -> endpoint-HASH-... chains
//	nat-postrouting (srcnat)             -> masquerading: hairpin mark, then one masquerade fully-random
//	filter-input/forward/output (filter) -> ct state new: service-endpoints-check (reject/drop Service
//	                                         ports without usable endpoints), cluster-ips-check (reject
//	                                         unknown ports of live ClusterIPs, drop unallocated Service IPs)
//
// Services without affinity therefore cost map elements only, no chains or rules, which is
// what keeps a 10k-Service sync fast; N in dnat-mod-N is the endpoint count, so these
// chains are shared by every Service port with the same number of endpoints. A port whose
// count falls keeps its N until Maintain moves it (padSlots, paddingHold), so that an
// endpoint's removal changes map elements only.
package datapath
