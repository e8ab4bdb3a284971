# One image for the control loops and the node agent. The node agent drives nftables
# through the `nft` binary (sigs.k8s.io/knftables), so the runtime base is Debian with the
# nftables package rather than distroless; the control loops need nothing from it.
# (make test-e2e assembles the same image offline in hack/e2e/images.sh; it says how it differs.)
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /kube-clusterip .

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nftables conntrack \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /kube-clusterip /kube-clusterip
# Non-root for the control loops; the node agent's DaemonSet runs it as root (runAsUser: 0)
# with only NET_ADMIN and NET_RAW, since the runtime grants added capabilities to root only.
USER 65532:65532
ENTRYPOINT ["/kube-clusterip"]
