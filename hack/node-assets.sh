#!/usr/bin/env bash
# Prints the directory holding what make test-e2e needs for a real node, next to envtest's
# kube-apiserver, etcd and kubectl (hack/envtest-assets.sh): kubelet, kube-controller-manager and
# kube-scheduler of hack/tools/kube (the same module, version and replace block as our
# kube-apiserver), containerd v2 with its runc shim and ctr, and the CNI plugins ptp,
# host-local and loopback (hack/tools/node), all built from the Go module proxy and cached.
# runc comes from Debian (apt-get install runc): it needs libseccomp, since containerd gives every
# sandbox a seccomp profile.
# A stamp of the modules' go.mod/go.sum and mains decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/assets-lib.sh"
assets_init node-assets
node="$here/tools/node"
kube_binaries=(kubelet kube-controller-manager kube-scheduler)
# containerd without the snapshotters that need cgo or kernel modules we do not use
# (overlayfs and native remain).
node_tools=(containerd/containerd/v2/cmd/containerd containerd/containerd/v2/cmd/containerd-shim-runc-v2 containerd/containerd/v2/cmd/ctr
	containernetworking/plugins/plugins/main/ptp containernetworking/plugins/plugins/main/loopback
	containernetworking/plugins/plugins/ipam/host-local)
# containerd, its shim and ctr live beside the kube binaries, the CNI plugins under cni/.
binaries=("${kube_binaries[@]}" containerd containerd-shim-runc-v2 ctr cni/ptp cni/loopback cni/host-local)
stamp=$(cat "$kube"/go.mod "$kube"/go.sum "$kube"/kubelet/main.go "$kube"/kube-controller-manager/main.go \
	"$kube"/kube-scheduler/main.go "$node"/go.mod "$node"/go.sum | sha256sum | cut -c1-16)

if assets_cached .node-stamp; then
	echo "node-assets: reusing cached kubelet, kube-controller-manager, kube-scheduler v$k8s_version, containerd and CNI plugins in $dir" >&2
	echo "$dir"
	exit 0
fi

start=$(date +%s)
# kubelet and kube-scheduler import a few modules that kube-apiserver does not; they are added to
# a copy of hack/tools/kube's go.mod, so that the checked-in one (and with it envtest's cache
# stamp) stays as kube-apiserver needs it.
modfile=$(mktemp -d)/kube-node.mod
trap 'rm -rf "$(dirname "$modfile")"' EXIT
cp "$kube/go.mod" "$modfile" && cp "$kube/go.sum" "${modfile%.mod}.sum"
for b in "${kube_binaries[@]}"; do
	t0=$(date +%s)
	build_kube "$b" -mod=mod -modfile="$modfile"
	echo "node-assets: built $b v$k8s_version in $(( $(date +%s) - t0 ))s" >&2
done
mkdir -p "$dir/cni"
for t in "${node_tools[@]}"; do
	t0=$(date +%s)
	out="$dir/${t##*/}"
	case $t in containernetworking/*) out="$dir/cni/${t##*/}" ;; esac
	CGO_ENABLED=0 go build -C "$node" -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w" -o "$out.new.$$" "github.com/$t"
	mv "$out.new.$$" "$out"
	echo "node-assets: built ${t##*/} in $(( $(date +%s) - t0 ))s" >&2
done
echo "$stamp" > "$dir/.node-stamp"
echo "node-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
echo "$dir"
