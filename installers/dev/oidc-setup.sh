#!/usr/bin/env bash
# Sets up the browser-SSO lab (tests/oidc): the pinned npm OpenID provider (oidc-provider, from
# tests/oidc/idp/package-lock.json) in a cache directory outside the clone, Playwright's Python
# driver in the venv, and Debian's Chromium. Idempotent; never downloads a browser build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${MESH_PEER_CACHE:-/var/cache/meshvpn-peers}"
NODE_DIR="$CACHE/oidc-node"
IDP_SRC="$here/tests/oidc/idp"
PLAYWRIGHT_VERSION="1.65.2"
VENV_PY="${VENV_PY:-$here/.venv/bin/python}"

log() { printf '\033[1m[oidc-setup]\033[0m %s\n' "$*"; }

apt_missing=()
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
[[ -x /usr/bin/chromium ]] || apt_missing+=(chromium)
if ((${#apt_missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "oidc-setup: missing ${apt_missing[*]}; run as root or apt-get install them" >&2
    exit 1
  fi
  log "installing Debian packages: ${apt_missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
  echo "oidc-setup: node $(node --version) is too old for oidc-provider 9 (needs >= 20)" >&2
  exit 1
fi

# oidc-provider: reinstall only when the pinned lockfile changed.
want="$(sha256sum "$IDP_SRC/package.json" "$IDP_SRC/package-lock.json" | sha256sum | cut -c1-16)"
stamp="$NODE_DIR/.meshvpn-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$NODE_DIR/node_modules/oidc-provider/package.json" ]]; then
  log "oidc-provider: cached in $NODE_DIR"
else
  log "oidc-provider: installing pinned packages into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$IDP_SRC/package.json" "$IDP_SRC/package-lock.json" "$NODE_DIR/"
  ( cd "$NODE_DIR" && npm ci --omit=dev --no-audit --no-fund --ignore-scripts --loglevel=error )
  echo "$want" > "$stamp"
fi

# Playwright's Python driver (bundles its own node driver; browsers are NOT installed: the
# lab launches /usr/bin/chromium through executable_path).
if [[ -x "$VENV_PY" ]]; then
  have="$("$VENV_PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)"
  if [[ "$have" != "$PLAYWRIGHT_VERSION" ]]; then
    log "installing playwright==$PLAYWRIGHT_VERSION into the venv"
    "$VENV_PY" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"
  else
    log "playwright $have: present"
  fi
else
  echo "oidc-setup: no venv python at $VENV_PY (create the venv first)" >&2
  exit 1
fi
log "ready (node modules: $NODE_DIR/node_modules, browser: /usr/bin/chromium)"
