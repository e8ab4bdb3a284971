#!/usr/bin/env bash
# Prints the directory holding upstream kube-controller-manager and kube-proxy for
# make bench-compare, built from the Go module proxy by the hack/tools/kube module (the same
# module and version as envtest's kube-apiserver), into the same cache directory as
# hack/envtest-assets.sh. Not part of make test: only the comparison needs them.
# A stamp of the module's go.mod/go.sum and the two main.go decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/assets-lib.sh"
assets_init upstream-assets
binaries=(kube-controller-manager kube-proxy)
stamp=$(cat "$kube"/go.mod "$kube"/go.sum "$kube"/kube-controller-manager/main.go "$kube"/kube-proxy/main.go |
	sha256sum | cut -c1-16)

if assets_cached .upstream-stamp; then
	echo "upstream-assets: reusing cached kube-controller-manager and kube-proxy v$k8s_version in $dir" >&2
	echo "$dir"
	exit 0
fi

start=$(date +%s)
for b in "${binaries[@]}"; do
	echo "upstream-assets: building $b v$k8s_version from the Go module proxy (several minutes on 2 cores the first time)" >&2
	build_kube "$b"
done
echo "$stamp" > "$dir/.upstream-stamp"
echo "upstream-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
echo "$dir"
