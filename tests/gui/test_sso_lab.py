"""Browser SSO end to end from the GUI: Log in → helper (real engine) → headscale OIDC → headless Chromium → Running.

The GUI runs in-process (it only needs the helper's Unix socket); the helper, headscale, the
IdP and the browser run in lab namespaces. The GUI's "open this URL" goes through Qt's
QDesktopServices, intercepted here and handed to the lab browser.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from PySide6.QtGui import QDesktopServices

from meshgui.app import App, parse_args
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.test_app import _UrlCatcher
from tests.lab.netlab import REPO_ROOT

pytestmark = pytest.mark.lab


@pytest.fixture
def sso(lab):
    try:
        from tests.lab.oidc import OidcSetupMissing, start_sso_lab
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"SSO lab helpers missing: {e}")
    try:
        return start_sso_lab(lab)
    except OidcSetupMissing as e:
        pytest.skip(str(e))


def test_gui_browser_sso_login_reaches_connected(sso, qapp, qloop, tmp_path, monkeypatch, artifacts_dir):
    lab, client = sso.client.lab, sso.client
    sock = str(lab.dir / "helper-gui.sock")
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_TESTING": "1"}
    helper = client.popen(
        [
            sys.executable,
            "-m",
            "engine.cli.helper",
            "serve",
            "--socket",
            sock,
            "--journal",
            str(lab.dir / "journal-gui.jsonl"),
            "--tun",
            "mesh0",
            "-v",
        ],
        env=env,
        cwd=str(REPO_ROOT),
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    args = parse_args(["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise", "--no-keyring"])
    app = App(qapp, args)
    app.settings.control_url = sso.login_server
    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("http", catcher, "open")

    async def main():
        task = asyncio.ensure_future(app.run())
        try:
            await wait_until(
                lambda: app.view.tray is TrayState.NEEDS_LOGIN or helper.poll() is not None,
                timeout=60,
                what="helper ready (NeedsLogin)",
            )
            assert helper.poll() is None, client.log_of(helper)[-3000:]
            app.on_action("login", "")
            await wait_until(lambda: catcher.urls, timeout=60, what="BrowseToURL opened by the GUI")
            assert app.login_dialog.isVisible() and app.view.login_pending
            url = catcher.urls[0]
            assert url.startswith(sso.login_server + "/register/")
            res = await asyncio.get_running_loop().run_in_executor(
                None, lambda: sso.login_with_browser(url, prefix="sso-gui")
            )
            assert res.ok, res
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED, timeout=90, what="connected")
            await wait_until(lambda: not app.login_dialog.isVisible(), what="login dialog closed")
            assert catcher.urls == [url], "the login page is opened once"
            await wait_until(lambda: app.view.self_node.ips and app.view.account, what="self IPs and account")
            assert app.view.self_node.ips[0].startswith("100.")
            assert any(t == "Connected" for t, _ in app.notified), app.notified
        finally:
            app.quit()
            await asyncio.wait_for(task, 30)
            app.window.close()

    try:
        run(qloop, main(), timeout=300)
    finally:
        QDesktopServices.unsetUrlHandler("http")


@pytest.mark.gui
def test_tray_click_log_in_then_browser_sso_under_xvfb(sso, tmp_path, artifacts_dir):
    """A real tray (Xvfb + trayer): click the icon, click "Log in…", the URL goes to the desktop's opener
    (an xdg-open stand-in that records it), the lab browser finishes the SSO; screenshots of every step."""
    import os
    import time

    from tests.gui.test_xvfb_tray import GuiProcess, shot, tray_icon_center
    from tests.gui.xsession import XSession, have_x_tools

    if not have_x_tools():
        pytest.skip("Xvfb/trayer/xdotool/import missing")
    lab, client = sso.client.lab, sso.client
    sock = str(lab.dir / "helper-tray.sock")
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_TESTING": "1"}
    helper = client.popen(
        [
            sys.executable,
            "-m",
            "engine.cli.helper",
            "serve",
            "--socket",
            sock,
            "--journal",
            str(lab.dir / "journal-tray.jsonl"),
            "--tun",
            "mesh0",
            "-v",
        ],
        env=env,
        cwd=str(REPO_ROOT),
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    opened = tmp_path / "opened-urls.txt"
    opener = bindir / "xdg-open"
    opener.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> {opened}\n")
    opener.chmod(0o755)
    (tmp_path / "gui.ini").write_text(f"[network]\ncontrol_url={sso.login_server}\n")
    with XSession(tray=True) as x:
        x.env["PATH"] = f"{bindir}:{x.env.get('PATH', '/usr/bin:/bin')}"
        x.env.pop("DESKTOP_SESSION", None)
        x.env.pop("XDG_CURRENT_DESKTOP", None)
        gui = GuiProcess(x, tmp_path, sock)
        try:
            XSession.wait_for(lambda: os.path.exists(sock) or helper.poll() is not None, "helper socket", 60)
            gui.wait_log("tray icon shown")
            cx, cy = tray_icon_center(x)
            time.sleep(1.5)  # first status from the helper
            x.xdotool("mousemove", str(cx), str(cy), "click", "1")
            gui.wait_log("tray menu shown")
            shot(x, artifacts_dir, "sso-1-menu-logged-out")
            x.xdotool("key", "--delay", "150", "Down", "Return")  # the one enabled item: "Log in…"
            url = XSession.wait_for(
                lambda: opened.exists() and opened.read_text().strip(), "URL handed to xdg-open", 60
            )
            XSession.wait_for(
                lambda: x.xdotool("search", "--onlyvisible", "--name", "^meshvpn login$", check=False).strip(),
                "login dialog",
            )
            time.sleep(1.0)
            shot(x, artifacts_dir, "sso-2-waiting-for-browser")
            assert url.startswith(sso.login_server + "/register/"), url
            res = sso.login_with_browser(url.splitlines()[0], prefix="sso-tray")
            assert res.ok, res

            def connected() -> bool:
                p = client.run(
                    [sys.executable, "-m", "engine.cli.meshctl", "--socket", sock, "status", "--json"],
                    check=False,
                    env=env,
                )
                return p.returncode == 0 and '"BackendState": "Running"' in p.stdout

            XSession.wait_for(connected, "helper Running", 90)
            time.sleep(2.0)  # the GUI's watch stream + status refresh
            x.xdotool("mousemove", str(cx), str(cy), "click", "1")
            gui.wait_log("tray menu shown", count=2)
            shot(x, artifacts_dir, "sso-3-menu-connected")
            x.xdotool("key", "Escape")
            assert len(opened.read_text().split()) == 1, "the login page is opened once"
        finally:
            gui.close()
