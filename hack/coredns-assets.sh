#!/usr/bin/env bash
# Prints the directory holding CoreDNS (the cluster DNS of make demo and of the DNS tests),
# built from the Go module proxy by the hack/tools/coredns module (upstream CoreDNS with only
# the plugins we use) into the same cache directory as hack/envtest-assets.sh, so that
# KUBEBUILDER_ASSETS names it too. hack/envtest-assets.sh calls this script.
# A stamp of the module's go.mod/go.sum and main.go decides whether the cache is current.
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/assets-lib.sh"
assets_init coredns-assets
coredns="$here/tools/coredns"
coredns_version=$(awk '$1 == "github.com/coredns/coredns" {print $2} $2 == "github.com/coredns/coredns" {print $3}' "$coredns/go.mod")
binaries=(coredns)
stamp=$(cat "$coredns"/go.mod "$coredns"/go.sum "$coredns"/main.go | sha256sum | cut -c1-16)

if assets_cached .coredns-stamp; then
	echo "coredns-assets: reusing cached CoreDNS $coredns_version in $dir" >&2
	echo "$dir"
	exit 0
fi

start=$(date +%s)
echo "coredns-assets: building CoreDNS $coredns_version from the Go module proxy (a few minutes on 2 cores the first time)" >&2
mkdir -p "$dir"
go build -C "$coredns" -ldflags "-s -w" -o "$dir/coredns.new.$$" .
mv "$dir/coredns.new.$$" "$dir/coredns"
echo "$stamp" > "$dir/.coredns-stamp"
echo "coredns-assets: built in $(( $(date +%s) - start ))s into $dir" >&2
echo "$dir"
