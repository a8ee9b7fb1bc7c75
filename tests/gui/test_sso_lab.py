"""Browser SSO end to end from the GUI: Log in → our helper (real engine) → headscale OIDC → headless Chromium → Running.

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
    helper = client.popen([sys.executable, "-m", "engine.cli.helper", "serve", "--socket", sock,
                           "--journal", str(lab.dir / "journal-gui.jsonl"), "--tun", "mesh0", "-v"],
                          env=env, cwd=str(REPO_ROOT))
    monkeypatch.setenv("HOME", str(tmp_path))
    args = parse_args(["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise", "--no-keyring"])
    app = App(qapp, args)
    app.settings.control_url = sso.login_server
    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("http", catcher, "open")

    async def main():
        task = asyncio.ensure_future(app.run())
        try:
            await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN or helper.poll() is not None,
                             timeout=60, what="helper ready (NeedsLogin)")
            assert helper.poll() is None, client.log_of(helper)[-3000:]
            app.on_action("login", "")
            await wait_until(lambda: catcher.urls, timeout=60, what="BrowseToURL opened by the GUI")
            assert app.login_dialog.isVisible() and app.view.login_pending
            url = catcher.urls[0]
            assert url.startswith(sso.login_server + "/register/")
            res = await asyncio.get_running_loop().run_in_executor(
                None, lambda: sso.login_with_browser(url, prefix="sso-gui"))
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
