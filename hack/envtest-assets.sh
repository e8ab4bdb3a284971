#!/usr/bin/env bash
# Prints the directory holding kube-apiserver, etcd and kubectl for envtest (KUBEBUILDER_ASSETS),
# and CoreDNS for the DNS tests and the demo (hack/coredns-assets.sh, same directory).
#
# setup-envtest downloads release binaries, which our machines cannot reach, so we build both
# from the Go module proxy (hack/tools/kube and hack/tools/etcd) into a cache directory outside
# the checkout. A stamp of the tools modules' go.mod/go.sum decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/assets-lib.sh"
assets_init envtest-assets
etcd="$here/tools/etcd"
stamp=$(cat "$kube"/go.mod "$kube"/go.sum "$kube"/kube-apiserver/main.go "$kube"/kubectl/main.go \
	"$etcd"/go.mod "$etcd"/go.sum "$etcd"/main.go | sha256sum | cut -c1-16)
binaries=(kube-apiserver kubectl etcd)

if assets_cached .stamp; then
	echo "envtest-assets: reusing cached kube-apiserver, kubectl v$k8s_version and etcd in $dir" >&2
	"$here/coredns-assets.sh" >/dev/null
	echo "$dir"
	exit 0
fi

start=$(date +%s)
echo "envtest-assets: building kube-apiserver v$k8s_version from the Go module proxy and kubectl (about 10 minutes on 2 cores the first time)" >&2
build_kube kube-apiserver
build_kube kubectl
echo "envtest-assets: building etcd" >&2
go build -C "$etcd" -ldflags "-s -w" -o "$dir/etcd.new.$$" .
mv "$dir/etcd.new.$$" "$dir/etcd"
echo "$stamp" > "$dir/.stamp"
echo "envtest-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
"$here/coredns-assets.sh" >/dev/null
echo "$dir"
