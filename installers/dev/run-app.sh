#!/usr/bin/env bash
# The main job: runs the privileged helper on its LocalAPI socket and the tray app for the
# invoking user. With no display it runs the tray under Xvfb + trayer and saves a screenshot.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$here"
SOCK="${MESHVPN_SOCKET:-/run/meshvpn/meshvpn.sock}"
USER_NAME="${SUDO_USER:-root}"
LOG_DIR="${MESH_LOG_DIR:-/var/log/meshvpn}"
mkdir -p "$LOG_DIR"

helper_pid=""
cleanup() {
  set +e
  [[ -n "${gui_pid:-}" ]] && kill -TERM "$gui_pid" 2>/dev/null
  [[ -n "${xvfb_pid:-}" ]] && kill -TERM "$xvfb_pid" "${trayer_pid:-}" 2>/dev/null
  if [[ -n "$helper_pid" ]]; then
    kill -TERM "$helper_pid" 2>/dev/null   # the helper restores routes, DNS and interfaces itself
    wait "$helper_pid" 2>/dev/null
  fi
}
trap cleanup EXIT INT TERM

echo "[meshvpn] starting mesh-helper on $SOCK (operator: $USER_NAME); log: $LOG_DIR/helper.log"
.venv/bin/mesh-helper serve --socket "$SOCK" --operator "$USER_NAME" >>"$LOG_DIR/helper.log" 2>&1 &
helper_pid=$!
for _ in $(seq 100); do [[ -S "$SOCK" ]] && break; sleep 0.1; done
[[ -S "$SOCK" ]] || { echo "[meshvpn] the helper did not start; see $LOG_DIR/helper.log" >&2; exit 1; }

gui=(.venv/bin/meshgui --socket "$SOCK" --no-supervise --show)
if [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
  echo "[meshvpn] starting the tray app on the desktop of $USER_NAME"
  if [[ "$USER_NAME" != root ]]; then
    runuser -u "$USER_NAME" -- env DISPLAY="${DISPLAY:-}" WAYLAND_DISPLAY="${WAYLAND_DISPLAY:-}" \
      XAUTHORITY="${XAUTHORITY:-}" DBUS_SESSION_BUS_ADDRESS="${DBUS_SESSION_BUS_ADDRESS:-}" \
      XDG_RUNTIME_DIR="/run/user/$(id -u "$USER_NAME")" "${gui[@]}" &
  else
    "${gui[@]}" &
  fi
  gui_pid=$!
  wait "$gui_pid"
  exit 0
fi

# No display: a virtual desktop with a tray host, so the app runs exactly as on a desktop.
disp=":$((90 + RANDOM % 9))"
shot="$here/test-artifacts/main-job.png"
mkdir -p "$(dirname "$shot")"
echo "[meshvpn] no display found: running the tray app on a virtual display $disp (Xvfb + trayer)"
Xvfb "$disp" -screen 0 1024x768x24 -nolisten tcp -noreset >"$LOG_DIR/xvfb.log" 2>&1 &
xvfb_pid=$!
sleep 1
DISPLAY="$disp" trayer --edge top --align right --widthtype request --height 28 --transparent false \
  --tint 0x333333 >"$LOG_DIR/trayer.log" 2>&1 &
trayer_pid=$!
sleep 1
export DISPLAY="$disp" QT_QPA_PLATFORM=xcb
dbus-run-session -- sh -c 'printf meshvpn | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1; exec "$@"' \
  sh "${gui[@]}" >"$LOG_DIR/meshgui.log" 2>&1 &
gui_pid=$!
sleep "${MESH_SHOT_DELAY:-6}"
if command -v import >/dev/null; then import -window root "$shot" && echo "[meshvpn] screenshot of the desktop: $shot"; fi
if [[ -n "${MESH_RUN_SECONDS:-}" ]]; then
  sleep "$MESH_RUN_SECONDS"
else
  echo "[meshvpn] running; press Ctrl-C to stop (the helper restores the system on exit)"
  wait "$gui_pid"
fi
