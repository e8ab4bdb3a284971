#!/usr/bin/env bash
# make test-e2e: kube-clusterip installed on a real node, as the README's install section says.
#
# Outside any namespace: builds (and caches) the control plane and node binaries from the Go
# module proxy (hack/envtest-assets.sh, hack/node-assets.sh), runc from Debian, our binary and
# the e2e specs, and the three images as docker-save tarballs (hack/e2e/images.sh). Then
# hack/e2e/node.sh runs in new network, mount and PID namespaces: etcd, kube-apiserver,
# kube-controller-manager (without its endpoint controllers), kube-scheduler, containerd and
# kubelet, with no kube-proxy; it installs us with kustomize and runs the specs (test/e2e).
# The host's network and nftables are never touched: the node's only links are lo, a veth pair
# inside its namespace and the pods' veths. When the namespace's first process exits every
# process in it dies; what kubelet left in the host's cgroup hierarchy (cgroup v1 has no
# namespace) is removed here afterwards.
# Needs root. E2E_KEEP=1 keeps the work directory (logs) under bin/e2e, as does a failure;
# arguments go to the spec binary (e.g. -ginkgo.focus=Ready -ginkgo.v).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "test-e2e: needs root (namespaces, containerd, kubelet)" >&2; exit 1; }
start=$(date +%s)
t() { echo "test-e2e: $* ($(( $(date +%s) - start ))s)" >&2; }

if ! command -v runc >/dev/null; then
	t "apt: runc (with libseccomp: containerd gives every sandbox a seccomp profile)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc >/dev/null; }
fi
assets=$(hack/envtest-assets.sh)
t "control plane binaries ready"
node_assets=$(hack/node-assets.sh)
t "node binaries ready"

work=$(pwd)/bin/e2e
rm -rf "$work" && mkdir -p "$work/images"
hack/e2e/images.sh "$work/images"
t "images built"
make --no-print-directory kustomize >/dev/null
go test -c -tags e2e -o "$work/e2e.test" ./test/e2e
t "e2e specs built"

cgroup_root=kube-clusterip-e2e
rc=0
unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private \
	env ASSETS="$assets" NODE_ASSETS="$node_assets" WORK="$work" REPO="$(pwd)" CGROUP_ROOT=$cgroup_root \
	KUSTOMIZE="$(pwd)/bin/kustomize" hack/e2e/node.sh "$@" || rc=$?
# Everything in the namespaces is gone now; kubelet's and runc's cgroups (children first) too.
for dir in /sys/fs/cgroup/*/"$cgroup_root" /sys/fs/cgroup/"$cgroup_root"; do
	[ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
leftover=$(ls -d /sys/fs/cgroup/*/"$cgroup_root" 2>/dev/null || true)
[ -z "$leftover" ] || echo "test-e2e: cgroups left behind: $leftover" >&2
[ -n "${E2E_KEEP:-}" ] || [ "$rc" != 0 ] || rm -rf "$work"
t "finished with status $rc${E2E_KEEP:+ (logs in $work)}"
exit "$rc"
