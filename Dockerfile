# One image for the control loops and the node agent. The node agent drives nftables
# through the `nft` binary (sigs.k8s.io/knftables), so the runtime base is Debian with the
# nftables package rather than distroless; the control loops need nothing from it.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /kube-clusterip .

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nftables conntrack \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /kube-clusterip /kube-clusterip
USER 65532:65532
ENTRYPOINT ["/kube-clusterip"]
