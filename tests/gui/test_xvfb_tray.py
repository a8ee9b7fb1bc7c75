"""A real tray under Xvfb with trayer (XEmbed host): click the icon with xdotool, walk the menu, keep screenshots.

Screenshots go to test-artifacts/gui-*.png.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.gui.builders import direct, exit_option, named, offline, peer
from tests.gui.fake_localapi import FakeLocalAPI
from tests.gui.tailscaled_proc import tailscaled_in_netns, tailscaled_path
from tests.gui.xsession import XSession, have_x_tools

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.gui, pytest.mark.skipif(not have_x_tools(), reason="Xvfb/trayer/xdotool/import missing")]

PEERS = [
    peer(1, named("nas"), direct("192.0.2.10:41641"), exit_option),
    peer(2, named("phone")),
    peer(3, named("build-server"), direct("198.51.100.7:41641")),
    peer(4, named("exit-fra"), exit_option),
    peer(5, named("old-laptop"), offline),
]


class GuiProcess:
    """meshgui as a child process on the X session; its INFO log is collected for synchronisation."""

    def __init__(self, x: XSession, tmp: pathlib.Path, sock: str, *extra: str) -> None:
        env = dict(
            x.env, HOME=str(tmp), XDG_RUNTIME_DIR=str(tmp), XDG_CONFIG_HOME=str(tmp / "config"), PYTHONPATH=str(ROOT)
        )
        self.log_path = tmp / "gui.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meshgui",
                "--socket",
                sock,
                "--no-supervise",
                "--no-keyring",
                "--log-level",
                "INFO",
                "--instance",
                f"gui-{os.getpid()}-{id(self)}",
                "--settings",
                str(tmp / "gui.ini"),
                *extra,
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 60.0) -> None:
        XSession.wait_for(lambda: self.text().count(needle) >= count or self._dead(), f"log {needle!r}", timeout)
        assert self.proc.poll() is None, self.text()[-3000:]

    def _dead(self) -> bool:
        return self.proc.poll() is not None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def tray_icon_center(x: XSession) -> tuple[int, int]:
    # trayer grows from its 1-2 px empty width once the icon is embedded
    tx, ty, tw, th = x.wait_for(lambda: (g := x.tray_geometry())[2] >= 16 and g, "icon embedded in trayer")
    return tx + tw // 2, ty + th // 2


def shot(x: XSession, artifacts_dir: pathlib.Path, name: str) -> pathlib.Path:
    time.sleep(0.6)  # let the X server finish painting before the grab (not an assertion)
    path = artifacts_dir / f"gui-{name}.png"
    x.screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def test_tray_connected_menu_and_exit_node(tmp_path, artifacts_dir):
    sock = str(tmp_path / "helper.sock")
    with FakeLocalAPI(sock, backend="Running", peers=PEERS) as fake, XSession(tray=True) as x:
        gui = GuiProcess(x, tmp_path, sock)
        try:
            gui.wait_log("tray icon shown")
            cx, cy = tray_icon_center(x)
            XSession.wait_for(lambda: ("GET", "/localapi/v0/status") in fake.requests, "status fetched")
            shot(x, artifacts_dir, "tray-connected")

            x.xdotool("mousemove", str(cx), str(cy), "click", "1")
            gui.wait_log("tray menu shown")
            shot(x, artifacts_dir, "tray-menu-connected")

            # Keyboard walk: Disconnect, Account, This device, Network devices ▸
            x.xdotool("key", "--delay", "150", "Down", "Down", "Down", "Down", "Right")
            shot(x, artifacts_dir, "tray-menu-devices")
            x.xdotool("key", "--delay", "150", "Left", "Down", "Right")  # Exit node ▸
            shot(x, artifacts_dir, "tray-menu-exit-nodes")
            # Items: None, exit-fra, nas → choose nas
            x.xdotool("key", "--delay", "150", "Down", "Down", "Return")
            XSession.wait_for(lambda: fake.prefs.get("ExitNodeID") == "n1CNTRL", "exit node chosen via the menu")
            gui.wait_log("tray menu shown")  # (menu closed after the click)
            shot(x, artifacts_dir, "tray-exit-node")

            x.xdotool("mousemove", str(cx), str(cy), "click", "1")
            gui.wait_log("tray menu shown", count=2)
            shot(x, artifacts_dir, "tray-menu-exit-node-active")
            x.xdotool("key", "Escape")
        finally:
            gui.close()


def test_main_window_screenshot(tmp_path, artifacts_dir):
    sock = str(tmp_path / "helper.sock")
    with FakeLocalAPI(sock, backend="Running", peers=PEERS) as fake, XSession(tray=True) as x:
        gui = GuiProcess(x, tmp_path, sock, "--show")
        try:
            gui.wait_log("tray icon shown")
            XSession.wait_for(lambda: sum(1 for r in fake.requests if r[1] == "/localapi/v0/ping") >= 4, "pings")
            time.sleep(1.0)
            x.xdotool("mousemove", "60", "160", "click", "1")  # select a row: the details pane fills in
            shot(x, artifacts_dir, "window")
        finally:
            gui.close()


def test_no_tray_host_window_under_x(tmp_path, artifacts_dir):
    sock = str(tmp_path / "helper.sock")  # nothing listens: helper not running
    with XSession(tray=False) as x:
        gui = GuiProcess(x, tmp_path, sock)
        try:
            x.wait_for(lambda: "No system tray was found" in gui.text(), "no-tray explanation")
            x.wait_for(
                lambda: x.xdotool("search", "--onlyvisible", "--name", "^meshvpn$", check=False).strip(),
                "main window shown",
            )
            shot(x, artifacts_dir, "no-tray-window")
        finally:
            gui.close()


@pytest.mark.lab
@pytest.mark.skipif(not os.path.exists(tailscaled_path()), reason="reference tailscaled not built")
def test_tray_needs_login_with_real_tailscaled(tmp_path, artifacts_dir):
    with tailscaled_in_netns() as sock, XSession(tray=True) as x:
        gui = GuiProcess(x, tmp_path, sock)
        try:
            gui.wait_log("tray icon shown")
            cx, cy = tray_icon_center(x)
            time.sleep(1.0)
            x.xdotool("mousemove", str(cx), str(cy), "click", "1")
            gui.wait_log("tray menu shown")
            shot(x, artifacts_dir, "tray-menu-needs-login-tailscaled")
            x.xdotool("key", "Escape")
        finally:
            gui.close()
