#!/usr/bin/env bash
# Builds make test-e2e's images as docker-save tarballs in $1, without docker or a registry:
#   kube-clusterip:e2e  our binary, from the same ingredients as the Dockerfile, except that
#                       the Debian layer holds only nft and the libraries it loads (Debian
#                       packages fetched with apt-get download and unpacked with dpkg -x)
#                       instead of all of debian:bookworm-slim, and conntrack is left out (the
#                       agent deletes conntrack entries through netlink; the tool is only
#                       for people debugging in the container). USER 65532:65532 as there.
#   pause:e2e           the sandbox image (hack/e2e/pause), for containerd's pinned sandbox
#   app:e2e             the test workload (hack/e2e/app)
set -euo pipefail
out=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
layers=$(mktemp -d)
trap 'rm -rf "$layers"' EXIT
imagetar="$layers/imagetar"
go build -C "$repo" -o "$imagetar" ./hack/e2e/imagetar

static() { # static DIR BINARY PACKAGE [LDFLAGS]: a static Go binary as the layer's only file
	mkdir -p "$1"
	CGO_ENABLED=0 go build -C "$repo" -trimpath -ldflags "-s -w ${4:-}" -o "$1/$2" "$3"
}

# nft and its shared libraries, from Debian packages (the versions of this machine's apt lists).
debs="$layers/debs"
mkdir -p "$debs" "$layers/nft"
packages=(nftables libnftables1 libedit2 libc6 libmnl0 libnftnl11 libxtables12 libjansson4 libgmp10 libtinfo6 libbsd0 libmd0)
(cd "$debs" && apt-get download -qq "${packages[@]}" 2>/dev/null) ||
	(apt-get update -qq && cd "$debs" && apt-get download -qq "${packages[@]}")
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$layers/nft"; done
rm -rf "$layers/nft/usr/share"
# Debian's usr-merge links, as in debian:bookworm-slim.
for d in lib lib64 bin sbin; do
	if [ -d "$layers/nft/$d" ] && [ ! -L "$layers/nft/$d" ]; then
		mkdir -p "$layers/nft/usr/$d" && cp -a "$layers/nft/$d/." "$layers/nft/usr/$d/" && rm -rf "${layers:?}/nft/$d"
	fi
	ln -sfn "usr/$d" "$layers/nft/$d"
done
mkdir -p "$layers/nft/tmp" && chmod 1777 "$layers/nft/tmp"
chroot "$layers/nft" /usr/sbin/nft --version >/dev/null || { echo "images: nft does not run from its layer" >&2; exit 1; }

static "$layers/kube-clusterip" kube-clusterip . "-X main.version=e2e"
"$imagetar" -o "$out/kube-clusterip.tar" -tag kube-clusterip:e2e -user 65532:65532 \
	-entrypoint /kube-clusterip -env PATH=/usr/sbin:/usr/bin:/sbin:/bin -layer "$layers/nft" -layer "$layers/kube-clusterip"

static "$layers/pause" pause ./hack/e2e/pause
"$imagetar" -o "$out/pause.tar" -tag registry.k8s.io/pause:e2e -user 65535:65535 -entrypoint /pause -layer "$layers/pause"

static "$layers/app" app ./hack/e2e/app
mkdir -p "$layers/app/tmp" && chmod 1777 "$layers/app/tmp"
"$imagetar" -o "$out/app.tar" -tag app:e2e -entrypoint /app -layer "$layers/app"
ls -la "$out" >&2
