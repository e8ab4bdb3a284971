#!/usr/bin/env bash
# Prints the directory holding kube-apiserver, etcd and kubectl for envtest (KUBEBUILDER_ASSETS).
#
# setup-envtest downloads release binaries, which our machines cannot reach, so we build both
# from the Go module proxy (hack/tools/kube and hack/tools/etcd) into a cache directory outside
# the checkout. A stamp of the tools modules' go.mod/go.sum decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools="$here/tools"
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2} $2 == "k8s.io/kubernetes" {print $3}' "$tools/kube/go.mod")
k8s_version=${k8s_version#v}
[ -n "$k8s_version" ] || { echo "envtest-assets: no k8s.io/kubernetes version in $tools/kube/go.mod" >&2; exit 1; }
dir=${KUBE_CLUSTERIP_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-clusterip/k8s-$k8s_version}
stamp=$(cat "$tools"/kube/go.mod "$tools"/kube/go.sum "$tools"/kube/kube-apiserver/main.go "$tools"/kube/kubectl/main.go \
	"$tools"/etcd/go.mod "$tools"/etcd/go.sum "$tools"/etcd/main.go | sha256sum | cut -c1-16)
binaries=(kube-apiserver kubectl etcd)

cached() {
	[ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ] || return 1
	for b in "${binaries[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

if cached; then
	echo "envtest-assets: reusing cached kube-apiserver, kubectl v$k8s_version and etcd in $dir" >&2
	echo "$dir"
	exit 0
fi

mkdir -p "$dir"
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
start=$(date +%s)
echo "envtest-assets: building kube-apiserver v$k8s_version from the Go module proxy and kubectl (about 10 minutes on 2 cores the first time)" >&2
for b in kube-apiserver kubectl; do
	go build -C "$tools/kube" -ldflags "$ldflags" -o "$dir/$b.new" "./$b"
	mv "$dir/$b.new" "$dir/$b"
done
echo "envtest-assets: building etcd" >&2
go build -C "$tools/etcd" -ldflags "-s -w" -o "$dir/etcd.new" .
mv "$dir/etcd.new" "$dir/etcd"
echo "$stamp" > "$dir/.stamp"
echo "envtest-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
echo "$dir"
