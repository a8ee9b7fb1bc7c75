#!/usr/bin/env bash
# Builds the Go reference peers (headscale, tailscaled, tailscale, derper) at pinned
# versions from the Go module proxy into a cache directory outside the clone.
set -euo pipefail
CACHE="${MESH_PEER_CACHE:-/var/cache/meshvpn-peers}"
TS_VERSION="v1.90.9"
HS_VERSION="v0.29.2"
mkdir -p "$CACHE/bin"
export GOBIN="$CACHE/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
stamp="$CACHE/versions"
want="tailscale=$TS_VERSION headscale=$HS_VERSION"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
   && [[ -x "$GOBIN/tailscaled" && -x "$GOBIN/tailscale" && -x "$GOBIN/derper" && -x "$GOBIN/headscale" ]]; then
  echo "reference peers: cached in $CACHE/bin"
  exit 0
fi
echo "reference peers: building tailscale $TS_VERSION and headscale $HS_VERSION into $CACHE/bin (first run takes several minutes)"
go install "tailscale.com/cmd/tailscaled@$TS_VERSION" "tailscale.com/cmd/tailscale@$TS_VERSION" "tailscale.com/cmd/derper@$TS_VERSION"
# `go install pkg@version` trips over the proxy refusing headscale's version list
# (deprecation check), so download the pinned module and build inside it.
go mod download "github.com/juanfont/headscale@$HS_VERSION"
( cd "$(go env GOMODCACHE)/github.com/juanfont/headscale@$HS_VERSION" && go build -o "$GOBIN/headscale" ./cmd/headscale )
echo "$want" > "$stamp"
echo "reference peers: ready in $CACHE/bin"
