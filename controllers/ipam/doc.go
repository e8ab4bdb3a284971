// Package ipam assigns ClusterIPs from ClusterIPPools against a real kube-apiserver: a mutating
// webhook fills spec.clusterIPs at admission, a validating webhook checks the final object, and a
// repair loop mirrors every Service's ClusterIPs into the pools' bitmaps (the Services are the
// source of truth, so a restart rebuilds the same state) and keeps pool status current.
//
// The core is Registry (registry.go: pools, bitmaps, holders; registry_servicecidrs.go: the
// ranges the cluster's ServiceCIDRs allow; assign.go: admission; status.go: pool status) and two
// pure functions, ChoosePool and WantFamilies (choose.go); the webhooks (webhook.go) and
// reconcilers (repair.go) only fetch, call it and write.
package ipam
