# Sourced by hack/envtest-assets.sh and hack/upstream-assets.sh. Both build Kubernetes binaries
# of hack/tools/kube (one module, one version) from the Go module proxy into one cache directory
# outside the checkout, and reuse them while a stamp of their sources matches.

# assets_init NAME sets name (for messages), kube, k8s_version and dir.
assets_init() {
	name=$1
	kube="$here/tools/kube"
	k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2} $2 == "k8s.io/kubernetes" {print $3}' "$kube/go.mod")
	k8s_version=${k8s_version#v}
	[ -n "$k8s_version" ] || { echo "$name: no k8s.io/kubernetes version in $kube/go.mod" >&2; exit 1; }
	dir=${KUBE_CLUSTERIP_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-clusterip/k8s-$k8s_version}
}

# assets_cached STAMPFILE says whether dir holds every one of binaries, built from sources whose
# stamp is in dir/STAMPFILE.
assets_cached() {
	[ "$(cat "$dir/$1" 2>/dev/null)" = "$stamp" ] || return 1
	for b in "${binaries[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

# build_kube BINARY [GO BUILD FLAGS...] builds one binary of hack/tools/kube into dir, with
# upstream's version stamped in as a release build would have it.
build_kube() {
	local minor ldflags
	minor=$(echo "$k8s_version" | cut -d. -f2)
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	mkdir -p "$dir"
	go build -C "$kube" "${@:2}" -ldflags "$ldflags" -o "$dir/$1.new.$$" "./$1"
	mv "$dir/$1.new.$$" "$dir/$1"
}
