#!/usr/bin/env bash
# Unpacks systemd-resolved (the version matching the installed systemd) into a cache dir for the
# lab tests in tests/resolved, without installing it: its postinst would take over the host's
# /etc/resolv.conf. Idempotent; changes nothing outside the cache dir.
#
#   bash installers/dev/fetch-resolved.sh            # -> /var/cache/meshvpn-peers/resolved/
#   MESH_PEER_CACHE=/some/dir bash installers/dev/fetch-resolved.sh
#
# Result: $dir/lib/systemd/systemd-resolved (Debian 12; usr/lib/... on merged-/usr packages),
# $dir/usr/bin/resolvectl, $dir/VERSION.
# The binaries need libsystemd-shared-<ver>.so from the installed `systemd` package (an RPATH
# to /usr/lib/x86_64-linux-gnu/systemd); when `systemd` is not installed, the matching
# libsystemd-shared package is unpacked into the same tree and the tests use LD_LIBRARY_PATH.
set -euo pipefail

cache="${MESH_PEER_CACHE:-/var/cache/meshvpn-peers}"
dir="$cache/resolved"
log() { printf '\033[1m[fetch-resolved]\033[0m %s\n' "$*"; }

installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '/install ok installed/ {print $4}'; }

ver="$(installed_version systemd)"
if [[ -z $ver ]]; then
  ver="$(installed_version libsystemd-shared)"
fi
if [[ -z $ver ]]; then
  # No systemd at all: take the candidate version and unpack libsystemd-shared too.
  ver="$(apt-cache policy systemd-resolved | awk '/Candidate:/ {print $2}')"
fi
if [[ -z $ver || $ver == "(none)" ]]; then
  echo "fetch-resolved: cannot determine a systemd-resolved version (apt-get update first?)" >&2
  exit 1
fi

if [[ -f $dir/VERSION && $(cat "$dir/VERSION") == "$ver" && -x $dir/usr/bin/resolvectl ]] &&
   [[ -x $dir/lib/systemd/systemd-resolved || -x $dir/usr/lib/systemd/systemd-resolved ]]; then
  log "systemd-resolved $ver: present in $dir"
  exit 0
fi

pkgs=(systemd-resolved)
[[ -n $(installed_version libsystemd-shared) && $(installed_version libsystemd-shared) == "$ver" ]] || pkgs+=(libsystemd-shared)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log "downloading ${pkgs[*]} $ver"
(
  cd "$tmp"
  # apt-get download runs as the _apt user when it can; the temp dir must be writable for it.
  chmod 0777 "$tmp"
  args=()
  for p in "${pkgs[@]}"; do args+=("$p=$ver"); done
  apt-get download -q "${args[@]}"
)
rm -rf "$dir.new"
mkdir -p "$dir.new"
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$dir.new"
done
echo "$ver" >"$dir.new/VERSION"
rm -rf "$dir"
mv "$dir.new" "$dir"
log "systemd-resolved $ver unpacked into $dir"
