#!/usr/bin/env bash
# Prints the directory holding upstream kube-controller-manager and kube-proxy for
# make bench-compare, built from the Go module proxy by the hack/tools/kube module (the same
# module and version as envtest's kube-apiserver), into the same cache directory as
# hack/envtest-assets.sh. Not part of make test: only the comparison needs them.
# A stamp of the module's go.mod/go.sum and the two main.go decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kube="$here/tools/kube"
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2} $2 == "k8s.io/kubernetes" {print $3}' "$kube/go.mod")
k8s_version=${k8s_version#v}
[ -n "$k8s_version" ] || { echo "upstream-assets: no k8s.io/kubernetes version in $kube/go.mod" >&2; exit 1; }
dir=${KUBE_CLUSTERIP_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-clusterip/k8s-$k8s_version}
binaries=(kube-controller-manager kube-proxy)
stamp=$(cat "$kube"/go.mod "$kube"/go.sum "$kube"/kube-controller-manager/main.go "$kube"/kube-proxy/main.go |
	sha256sum | cut -c1-16)

cached() {
	[ "$(cat "$dir/.upstream-stamp" 2>/dev/null)" = "$stamp" ] || return 1
	for b in "${binaries[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

if cached; then
	echo "upstream-assets: reusing cached kube-controller-manager and kube-proxy v$k8s_version in $dir" >&2
	echo "$dir"
	exit 0
fi

mkdir -p "$dir"
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
start=$(date +%s)
for b in "${binaries[@]}"; do
	echo "upstream-assets: building $b v$k8s_version from the Go module proxy (several minutes on 2 cores the first time)" >&2
	go build -C "$kube" -ldflags "$ldflags" -o "$dir/$b.new" "./$b"
	mv "$dir/$b.new" "$dir/$b"
done
echo "$stamp" > "$dir/.upstream-stamp"
echo "upstream-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
echo "$dir"
