"""End to end in the lab: GUI + our helper (real engine) + headscale + a tailscaled exit node.

    ctl 192.0.2.1 (headscale, embedded DERP over http)
        |
    ----+---- switch lan 192.0.2.0/24 ----+
            |                              |
      ours 192.0.2.11                 ts 192.0.2.12
      mesh-helper serve (mesh0)       tailscaled --advertise-exit-node (tailscale0)
      + meshctl up --auth-key file:   routes approved in headscale

The GUI (meshgui App, offscreen Qt) runs in the test process: it only needs our helper's
Unix socket. It must show the tailscaled peer online with its tailnet IP and a direct path,
offer it as an exit node, and its exit-node actions (the tray menu's QAction and the
window's "Use as exit node" button / exit combo, both routed through App.on_action to the
bridge) must set and clear ExitNodeID in the helper, which installs and removes the exit
routing (ip rule 5270 -> table 52 default dev mesh0) in our namespace.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

import pytest

pytestmark = pytest.mark.lab

TUN = "mesh0"  # natmatrix OurNode's TUN name
OURS_NAME = "guinode"
PATH_TIMEOUT = 120.0  # protocol-level deadline: disco must upgrade DERP to direct on a flat LAN


@pytest.fixture
def tailnet(lab):
    """headscale + approved tailscaled exit node + our logged-in helper; yields (net, tailscaled, ours, ts_ip)."""
    from tests.exit_tailscaled.tsnet import TS_NAME, approve_exit, build, start_tailscaled
    from tests.natmatrix.nodes import OurNode

    net = build(lab)  # skips when headscale/tailscaled are not built
    key = net.hs.preauth_key("alice")
    t = start_tailscaled(net, key, "--advertise-exit-node", forwarding=True)
    approve_exit(net.hs, TS_NAME)
    ours = OurNode(OURS_NAME)
    ours.start(net.ours, net.hs.url, key)
    ours.wait_running(60)
    yield net, t, ours, t.ip()
    ours.stop()


def _exit_routing(host) -> tuple[bool, str]:
    """(rule 5270 -> table 52 present and table 52 has `default dev mesh0`, dump) in our namespace (IPv4)."""
    rules = host.run(["ip", "-4", "rule", "show"]).stdout
    table = host.run(["ip", "-4", "route", "show", "table", "52"], check=False).stdout
    ok = any(ln.startswith("5270:") and "lookup 52" in ln for ln in rules.splitlines()) and any(
        ln.startswith("default") and f"dev {TUN}" in ln for ln in table.splitlines()
    )
    return ok, f"ip rule:\n{rules}\ntable 52:\n{table}"


def _no_exit_routing(host) -> tuple[bool, str]:
    rules = host.run(["ip", "-4", "rule", "show"]).stdout
    table = host.run(["ip", "-4", "route", "show", "table", "52"], check=False).stdout
    ok = not any(ln.startswith("5270:") for ln in rules.splitlines()) and "default" not in table
    return ok, f"ip rule:\n{rules}\ntable 52:\n{table}"


def _prefs(sock: str) -> dict:
    from tests.natmatrix.localapi import get_json

    return get_json(sock, "/localapi/v0/prefs")


def _meshctl_json(sock: str, *args: str) -> str:
    import subprocess

    from tests.lab.netlab import REPO_ROOT

    p = subprocess.run(
        [sys.executable, "-m", "engine.cli.meshctl", "--socket", sock, "--json", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(REPO_ROOT),
    )
    assert p.returncode == 0, p.stderr[-1000:]
    return p.stdout


def test_gui_shows_tailscaled_peer_and_sets_exit_node(tailnet, qapp, qloop, tmp_path, monkeypatch, artifacts_dir):
    from meshgui import menu
    from meshgui.app import App, parse_args
    from meshgui.models import COL_IPS, COL_NAME, COL_PATH
    from meshgui.state import PathKind, TrayState
    from meshgui.tray import Tray
    from tests.exit_tailscaled.tsnet import TS_LAN, TS_NAME
    from tests.gui.aio import run, wait_until

    net, t, ours, ts_ip = tailnet
    sock = str(ours.socket_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    app = App(
        qapp,
        parse_args(
            ["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise", "--no-keyring", "--show"]
        ),
    )
    # Offscreen Qt has no system tray, so App shows only its window; the tray menu is still the GUI's
    # other control surface: a Tray wired exactly like App.__init__ wires its own.
    tray = Tray(clock=app.clock)
    app.bridge.stateChanged.connect(tray.apply)
    tray.actionTriggered.connect(app.on_action)
    loop = qloop

    async def blocking(fn, *a):
        return await loop.run_in_executor(None, fn, *a)

    def ts_peer():
        return next((p for p in app.view.peers if p.ipv4 == ts_ip), None)

    def diag() -> str:
        return f"view peers: {app.view.peers}\nour log:\n{ours.log()[-3000:]}"

    def menu_action(text_prefix: str):
        """The tray QMenu's action under "Exit node: …" whose text starts with `text_prefix`."""
        sub = next(a.menu() for a in tray.menu.actions() if a.menu() is not None and a.text().startswith("Exit node"))
        return next(a for a in sub.actions() if a.text().startswith(text_prefix)), sub

    async def wait_exit(want_id: str, what: str) -> dict:
        await wait_until(lambda: app.view.exit_node_id == want_id, timeout=30, what=f"GUI view: {what}")
        deadline = loop.time() + 60
        check = _exit_routing if want_id else _no_exit_routing
        while True:
            prefs = await blocking(_prefs, sock)
            ok, dump = await blocking(check, net.ours)
            if prefs.get("ExitNodeID", "") == want_id and ok:
                return prefs
            if loop.time() > deadline:
                raise AssertionError(
                    f"{what}: helper prefs ExitNodeID={prefs.get('ExitNodeID')!r} (want {want_id!r})\n{dump}\n{diag()}"
                )
            await asyncio.sleep(0.3)

    async def main():
        task = asyncio.ensure_future(app.run())
        try:
            await wait_until(
                lambda: app.view.tray is TrayState.CONNECTED and ts_peer() and ts_peer().online,
                timeout=60,
                what="GUI connected with the tailscaled peer online",
            )
            p = ts_peer()
            assert p.name == TS_NAME and p.id, p
            assert p.exit_node_option, p
            # the tailnet name matches what tailscaled reports for the same tailnet
            ts_tailnet = (await blocking(t.status)).get("CurrentTailnet") or {}
            assert app.view.tailnet and app.view.tailnet == ts_tailnet.get("Name"), (app.view.tailnet, ts_tailnet)
            # a path is shown right away (DERP or direct); in this flat LAN it must become direct
            await wait_until(
                lambda: ts_peer().path is PathKind.DIRECT,
                timeout=PATH_TIMEOUT,
                what="direct path to tailscaled in the GUI",
            )
            p = ts_peer()
            assert p.path_detail.startswith(f"{TS_LAN}:"), p
            # the window's peer table shows it too
            row = app.window.model.row_of(p.key)
            assert row >= 0
            cell = lambda col: app.window.model.index(row, col).data()  # noqa: E731
            assert cell(COL_NAME) == TS_NAME and ts_ip in cell(COL_IPS), (cell(COL_NAME), cell(COL_IPS))
            assert cell(COL_PATH) == f"direct {p.path_detail}", cell(COL_PATH)
            # ... and the tray menu: device line and exit node option
            items = list(menu.walk(menu.build(app.view, now=dt.datetime.now(dt.timezone.utc))))
            assert any(i.text.startswith(f"{TS_NAME}  {ts_ip}  — direct") for i in items), [i.text for i in items]
            assert [(i.text, i.arg) for i in items if i.action == "set_exit_node"] == [("None", ""), (TS_NAME, p.id)]
            _shot_window(app, artifacts_dir / "gui-e2e-1-window-direct.png")

            # traffic through the tunnel: the GUI shows the WireGuard handshake and byte counters
            got = await blocking(
                lambda: net.ours.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", ts_ip], check=False, timeout=30)
            )
            assert got.returncode == 0, got.stdout + got.stderr
            await wait_until(
                lambda: ts_peer().last_handshake and ts_peer().rx_bytes > 0 and ts_peer().tx_bytes > 0,
                timeout=30,
                what="handshake and traffic counters in the GUI",
            )

            # 1. tray menu: Exit node -> tsnode
            act, sub = menu_action(TS_NAME)
            assert act.isEnabled() and act.isCheckable() and not act.isChecked()
            _shot_menu(tray.menu, artifacts_dir / "gui-e2e-2-tray-menu.png")
            _shot_menu(sub, artifacts_dir / "gui-e2e-2-exit-menu.png")
            act.trigger()
            prefs = await wait_exit(p.id, "exit node set from the tray menu")
            assert app.view.tray is TrayState.EXIT_NODE
            await wait_until(lambda: menu_action(TS_NAME)[0].isChecked(), what="menu check mark on tsnode")
            st = await blocking(_meshctl_json, sock, "status")
            assert p.id in st, st[:2000]  # meshctl (the CLI) sees the GUI's choice too
            route = net.ours.run(["ip", "route", "get", "203.0.113.2"]).stdout  # an "internet" address
            assert f"dev {TUN}" in route and "table 52" in route, route
            _shot_window(app, artifacts_dir / "gui-e2e-3-window-exit-node.png")

            # 2. window exit combo: None
            combo = app.window.exit_combo
            assert [combo.itemText(i) for i in range(combo.count())] == ["None", TS_NAME]
            assert combo.currentIndex() == 1 and combo.isEnabled()
            combo.setCurrentIndex(0)
            combo.activated.emit(0)  # what a user's pick emits
            prefs = await wait_exit("", "exit node cleared from the window's combo")
            assert app.view.tray is TrayState.CONNECTED

            # 3. window details: select tsnode, "Use as exit node"
            app.window.select_peer(p.key)
            await wait_until(lambda: app.window.use_exit.isEnabled(), what="Use as exit node enabled")
            app.window.use_exit.click()
            await wait_exit(p.id, "exit node set from the window's button")
            await wait_until(lambda: app.window.fields["Exit node"].text() == "in use", what="details: in use")
            assert app.window.fields["Path"].text() == f"direct ({ts_peer().path_detail})"
            _shot_window(app, artifacts_dir / "gui-e2e-4-window-details-exit-in-use.png")

            # 4. tray menu: Exit node -> None
            act, _ = menu_action("None")
            act.trigger()
            prefs = await wait_exit("", "exit node cleared from the tray menu")
            assert not prefs.get("ExitNodeIP"), prefs
            assert ts_peer().online
        finally:
            app.quit()
            await asyncio.wait_for(task, 30)
            app.window.close()
            tray.hide()

    run(qloop, main(), timeout=PATH_TIMEOUT + 240)


def _shot_window(app, path) -> None:
    """Offscreen grab of the main window (best effort: a failed save never fails the test)."""
    app.window.grab().save(str(path))


def _shot_menu(qmenu, path) -> None:
    qmenu.adjustSize()
    qmenu.grab().save(str(path))
