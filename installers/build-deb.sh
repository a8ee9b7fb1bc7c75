#!/bin/sh
# Build dist/meshvpn_<version>_<arch>.deb: the PyInstaller bundle under /opt/meshvpn, /usr/bin
# symlinks, the systemd unit, polkit (policy, rules, pkexec wrapper), the desktop entry, the icon
# and the maintainer scripts. Needs: the project venv with pyinstaller (pip install -e '.[gui,package]'), dpkg-deb.
#
#   installers/build-deb.sh [--out DIR] [--work DIR] [--python PY] [--no-gui] [--bundle DIR]
#
#   --out DIR     where the .deb goes (default: <repo>/dist)
#   --work DIR    scratch space for PyInstaller and the package tree (default: <repo>/build/deb)
#   --python PY   interpreter whose environment is bundled (default: <repo>/.venv/bin/python)
#   --no-gui      leave meshgui and PySide6 out (server package: helper + meshctl only)
#   --bundle DIR  reuse an existing PyInstaller output dir (DIR/mesh-helper, ...) instead of building
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT="$REPO/dist"
WORK="$REPO/build/deb"
PY="$REPO/.venv/bin/python"
BUNDLE=""
NO_GUI=0

while [ $# -gt 0 ]; do
    case "$1" in
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --no-gui) NO_GUI=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

PREFIX=/opt/meshvpn
PROGRAMS="mesh-helper meshctl"
[ "$NO_GUI" = 1 ] || PROGRAMS="$PROGRAMS meshgui"

log() { echo "build-deb: $*" >&2; }
die() { echo "build-deb: error: $*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt install dpkg)"
[ -x "$PY" ] || die "no Python at $PY (create the venv first: installers/dev/bootstrap.sh)"

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO/pyproject.toml")
ARCH=$(dpkg --print-architecture)
DEB="$OUT/meshvpn_${VERSION}_${ARCH}.deb"
log "meshvpn $VERSION ($ARCH): $PROGRAMS"

# ---------------------------------------------------------------- 1. the PyInstaller bundle
if [ -z "$BUNDLE" ]; then
    "$PY" -c 'import PyInstaller' 2>/dev/null \
        || die "PyInstaller is missing: $PY -m pip install 'pyinstaller==6.22.3'"
    mkdir -p "$WORK"
    log "PyInstaller -> $WORK/pyinstaller"
    start=$(date +%s)
    MESHVPN_NO_GUI=$NO_GUI "$PY" -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$WORK/pyinstaller/dist" --workpath "$WORK/pyinstaller/work" \
        "$REPO/installers/pyinstaller/meshvpn.spec"
    log "bundle built in $(( $(date +%s) - start ))s"
    BUNDLE="$WORK/pyinstaller/dist/meshvpn"
fi
for p in $PROGRAMS; do
    [ -x "$BUNDLE/$p" ] || die "$BUNDLE/$p is missing (GUI not buildable? use --no-gui)"
done

# ---------------------------------------------------------------- 2. the package tree
ROOT="$WORK/root"
rm -rf "$ROOT"
mkdir -p "$ROOT$PREFIX" "$ROOT/usr/bin" "$ROOT/DEBIAN" "$ROOT/usr/share/doc/meshvpn"
cp -a "$BUNDLE/." "$ROOT$PREFIX/"
for p in $PROGRAMS; do
    ln -s "$PREFIX/$p" "$ROOT/usr/bin/$p"
done

# systemd unit: run the bundled helper directly, and make members of the meshvpn group operators
# (an admin's `systemctl edit mesh-helper` drop-in still overrides MESH_OPERATOR).
install -D -m 0644 "$REPO/resources/systemd/mesh-helper.service" "$ROOT/usr/lib/systemd/system/mesh-helper.service"
sed -i -e "s|/usr/bin/mesh-helper|$PREFIX/mesh-helper|g" \
       -e 's|^Environment=MESH_OPERATOR=$|Environment=MESH_OPERATOR=:meshvpn|' \
       "$ROOT/usr/lib/systemd/system/mesh-helper.service"
grep -q "^ExecStart=$PREFIX/mesh-helper " "$ROOT/usr/lib/systemd/system/mesh-helper.service" \
    || die "mesh-helper.service: ExecStart was not rewritten to $PREFIX/mesh-helper"

# polkit: the GUI starts the helper with `systemctl start mesh-helper.service`, which the rules file
# allows the meshvpn group (that unit, start/stop/restart only); without systemd it runs
# `pkexec /usr/libexec/meshvpn/mesh-helper-start`, an argument-less wrapper (admin password each time).
install -D -m 0644 "$REPO/resources/polkit/org.meshvpn.helper.policy" \
    "$ROOT/usr/share/polkit-1/actions/org.meshvpn.helper.policy"
install -D -m 0644 "$REPO/resources/polkit/50-meshvpn.rules" "$ROOT/usr/share/polkit-1/rules.d/50-meshvpn.rules"
install -D -m 0755 "$REPO/resources/polkit/mesh-helper-start" "$ROOT/usr/libexec/meshvpn/mesh-helper-start"
sed -i "s|/usr/bin/mesh-helper|$PREFIX/mesh-helper|g" "$ROOT/usr/libexec/meshvpn/mesh-helper-start"
grep -q "^    $PREFIX/mesh-helper serve " "$ROOT/usr/libexec/meshvpn/mesh-helper-start" \
    || die "mesh-helper-start: the helper path was not rewritten to $PREFIX/mesh-helper"

if [ "$NO_GUI" = 0 ]; then
    # File name = QGuiApplication.desktopFileName ("meshgui"), so Wayland/docks match the window.
    install -D -m 0644 "$REPO/resources/meshgui.desktop" "$ROOT/usr/share/applications/meshgui.desktop"
    install -D -m 0644 "$REPO/resources/icons/meshvpn.svg" \
        "$ROOT/usr/share/icons/hicolor/scalable/apps/meshvpn.svg"
fi
# No /etc/xdg/autostart entry: run-at-login is the user's choice, made in the tray app's
# preferences (it writes ~/.config/autostart/meshgui.desktop).

install -m 0644 "$REPO/installers/deb/copyright" "$ROOT/usr/share/doc/meshvpn/copyright"

# Modes: directories 0755, executables 0755, everything else 0644; nothing group/world-writable.
find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -type f -exec chmod u+rw,go-w,go+r {} +
find "$ROOT$PREFIX/_internal" -type f -name '*.so*' -exec chmod 0644 {} +
for p in $PROGRAMS; do chmod 0755 "$ROOT$PREFIX/$p"; done

# ---------------------------------------------------------------- 3. control data
DEPENDS="libc6 (>= 2.36), libgcc-s1, libstdc++6 (>= 11), iproute2, nftables, iputils-ping, adduser | passwd"
GUI_DEPENDS="libglib2.0-0, libdbus-1-3, libfontconfig1, libfreetype6, libzstd1, libbrotli1,
 libgssapi-krb5-2, libegl1, libgl1, libx11-6, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-glx0,
 libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render0, libxcb-render-util0,
 libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-util1, libxcb-xfixes0, libxcb-xkb1, libxkbcommon0,
 libxkbcommon-x11-0, libwayland-client0, libwayland-cursor0, libwayland-egl1"
RECOMMENDS="systemd"
SUGGESTS="systemd-resolved"
if [ "$NO_GUI" = 0 ]; then
    DEPENDS="$DEPENDS, $(echo "$GUI_DEPENDS" | tr '\n' ' ' | tr -s ' ')"
    RECOMMENDS="$RECOMMENDS, pkexec | policykit-1, gnome-keyring | kwalletmanager | keepassxc"
    SUGGESTS="$SUGGESTS, gnome-shell-extension-appindicator"
fi
INSTALLED_SIZE=$(du -sk --apparent-size "$ROOT" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" \
    -e "s/@DEPENDS@/$DEPENDS/" -e "s/@RECOMMENDS@/$RECOMMENDS/" -e "s/@SUGGESTS@/$SUGGESTS/" \
    "$REPO/installers/deb/control.in" > "$ROOT/DEBIAN/control"
for s in postinst prerm postrm; do
    install -m 0755 "$REPO/installers/deb/$s" "$ROOT/DEBIAN/$s"
done

# ---------------------------------------------------------------- 4. the .deb
mkdir -p "$OUT"
start=$(date +%s)
# xz -6 (dpkg's default, readable by every dpkg); files owned by root:root without fakeroot.
dpkg-deb --root-owner-group -Zxz -z6 --build "$ROOT" "$DEB" >/dev/null
log "packed in $(( $(date +%s) - start ))s"
log "bundle $(du -sh "$BUNDLE" | cut -f1), installed $(( INSTALLED_SIZE / 1024 )) MiB, .deb $(du -h "$DEB" | cut -f1)"
echo "$DEB"
