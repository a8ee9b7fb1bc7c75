#!/usr/bin/env bash
# Sets up a fresh Debian machine for meshvpn (apt packages, reference peers, venv) and
# then runs the main job ("run") or the test suite ("test"). Run as root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
mode="${1:-test}"; shift || true

APT_PACKAGES=(
  wireguard-go wireguard-tools iperf3 nftables iproute2 iputils-ping coturn stun-client
  xvfb trayer xdotool imagemagick x11-utils gnome-keyring dbus dbus-x11 libnotify-bin
  libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0
  libxcb-render-util0 libxcb-image0 libegl1 libgl1 libfontconfig1 libdbus-1-3
  dnsutils tcpdump chromium chromium-driver procps psmisc socat netcat-openbsd binutils conntrack
)

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "bootstrap.sh must run as root (it installs packages and creates network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages: present"
fi

bash installers/dev/build-peers.sh
# systemd-resolved unpacked into the peer cache (never installed: its postinst would take over /etc/resolv.conf)
bash installers/dev/fetch-resolved.sh || log "systemd-resolved cache unavailable; tests/resolved will skip"
export MESH_PEER_BIN="${MESH_PEER_CACHE:-/var/cache/meshvpn-peers}/bin"

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  log "creating venv in .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.meshvpn-deps
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  log "installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev,package]'
  touch "$stamp"
else
  log "Python packages: present"
fi

bash installers/dev/oidc-setup.sh

case "$mode" in
  test)
    log "checking style and types (ruff, mypy)"
    set +e
    lint=0
    .venv/bin/ruff check --no-cache . || lint=1
    .venv/bin/ruff format --no-cache --check . || lint=1
    .venv/bin/mypy --cache-dir=/dev/null || lint=1
    log "running the test suite"
    .venv/bin/python -m pytest -p no:cacheprovider "$@"
    rc=$?
    set -e
    if [[ $rc -eq 5 ]]; then echo "no tests were collected" >&2; exit 1; fi
    if [[ $rc -eq 0 && $lint -ne 0 ]]; then echo "tests passed, but ruff or mypy reported problems (above)" >&2; exit 1; fi
    exit $rc
    ;;
  run)
    log "starting the main job"
    exec bash installers/dev/run-app.sh "$@"
    ;;
  setup)
    log "set-up done"
    ;;
  *)
    echo "usage: bootstrap.sh run|test|setup [args]" >&2; exit 2;;
esac
