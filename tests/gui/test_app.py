"""The composed App in-process (offscreen, so no tray host): no-tray fallback, keyring refusal, supervision, login."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from keyring.backends import fail
from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QDesktopServices

from meshgui.app import NO_TRAY_TEXT, App, SingleInstance, parse_args
from meshgui.keys import KeyStore
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.fake_localapi import FakeLocalAPI
from tests.gui.keyring_lab import HAVE_KEYRING_DAEMON

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def make_app(qapp, tmp_path, *extra, **kw) -> App:
    args = parse_args(["--socket", str(tmp_path / "helper.sock"), "--settings", str(tmp_path / "gui.ini"), *extra])
    return App(qapp, args, **kw)


async def start(app: App) -> asyncio.Future:
    return asyncio.ensure_future(app.run())


async def stop(app: App, task: asyncio.Future) -> None:
    app.quit()
    try:
        await asyncio.wait_for(asyncio.shield(task), 20)
    except asyncio.TimeoutError:
        for t in asyncio.all_tasks():
            t.print_stack(file=sys.stderr)
        raise
    app.window.close()


def test_no_tray_host_explains_and_shows_window(qapp, qloop, env, capfd):
    with FakeLocalAPI(str(env / "helper.sock"), backend="Running"):
        app = make_app(qapp, env, "--no-supervise")
        assert not app.tray_available and app.tray is None

        async def main():
            task = await start(app)
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED, what="connected")
            assert app.window.isVisible()
            assert app.window.banner.isVisibleTo(app.window) and app.window.banner.text() == NO_TRAY_TEXT
            await stop(app, task)

        run(qloop, main())
    assert "No system tray was found" in capfd.readouterr().err
    # ... said once: a second start does not print it again.
    with FakeLocalAPI(str(env / "helper.sock"), backend="Running"):
        app2 = make_app(qapp, env, "--no-supervise")

        async def again():
            task = await start(app2)
            await wait_until(lambda: app2.view.tray is TrayState.CONNECTED)
            assert app2.window.banner.text() == NO_TRAY_TEXT
            await stop(app2, task)

        run(qloop, again())
    assert "No system tray was found" not in capfd.readouterr().err


def test_keyring_unavailable_is_explained_and_no_keys_sent(qapp, qloop, env):
    with FakeLocalAPI(str(env / "helper.sock"), backend="Running") as fake:
        app = make_app(qapp, env, "--no-supervise", keystore=KeyStore(fail.Keyring()))

        async def main():
            task = await start(app)
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED)
            await wait_until(lambda: "keyring" in app.window.banner.text(), what="keyring banner")
            assert "never writes keys to a file" in app.window.banner.text()
            assert any(t == "No keyring" for t, _ in app.notified)
            await stop(app, task)

        run(qloop, main())
        assert fake.received_keys == []


class _UrlCatcher(QObject):
    def __init__(self):
        super().__init__()
        self.urls = []

    @Slot("QUrl")
    def open(self, url):
        self.urls.append(url.toString())


def test_login_opens_browser_once_and_completes(qapp, qloop, env):
    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("http", catcher, "open")
    try:
        with FakeLocalAPI(str(env / "helper.sock"), backend="NeedsLogin") as fake:
            app = make_app(qapp, env, "--no-supervise")

            async def main():
                task = await start(app)
                await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN)
                app.on_action("login", "")
                await wait_until(lambda: catcher.urls, what="browser opened")
                assert app.login_dialog.isVisible()
                assert "Waiting for browser login" in app.login_dialog.message.text()
                fake.complete_login()
                await wait_until(lambda: app.view.tray is TrayState.CONNECTED, what="connected")
                await wait_until(lambda: not app.login_dialog.isVisible(), what="dialog closed")
                assert catcher.urls == [fake.login_url]
                assert ("Connected", "Connected to alice@example.com as alice@example.com") in app.notified
                await stop(app, task)

            run(qloop, main())
    finally:
        QDesktopServices.unsetUrlHandler("http")


def test_login_cancel(qapp, qloop, env):
    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("http", catcher, "open")
    try:
        with FakeLocalAPI(str(env / "helper.sock"), backend="NeedsLogin"):
            app = make_app(qapp, env, "--no-supervise")

            async def main():
                task = await start(app)
                await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN)
                app.on_action("login", "")
                await wait_until(lambda: app.login_dialog.isVisible())
                app.login_dialog.cancel_btn.click()
                await wait_until(lambda: not app.view.login_pending and not app.login_dialog.isVisible())
                await stop(app, task)

            run(qloop, main())
    finally:
        QDesktopServices.unsetUrlHandler("http")


def test_supervisor_starts_restarts_and_restores_choices(qapp, qloop, env):
    sock = str(env / "helper.sock")
    cmd = f"{sys.executable} -m tests.gui.fake_helper_main --socket {sock} --backend Stopped"
    app = make_app(qapp, env, "--helper-command", cmd)
    os.chdir(ROOT)

    async def main():
        task = await start(app)
        try:
            await wait_until(lambda: app.view.tray is TrayState.STOPPED, timeout=60, what="helper started")
            assert app.supervisor.status.starts == 1
            app.on_action("connect", "")
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED)
            app.on_action("set_exit_node", "n1CNTRL")
            await wait_until(lambda: app.view.tray is TrayState.EXIT_NODE)
            await wait_until(lambda: app.settings.choices.exit_node_id == "n1CNTRL")
            # Crash the helper: the GUI shows it, restarts it and returns to the same state.
            proc = app.supervisor.strategies[0].proc
            os.kill(proc.pid, signal.SIGKILL)
            await wait_until(lambda: app.view.tray is TrayState.HELPER_DOWN, what="helper down shown")
            await wait_until(lambda: app.supervisor.status.starts == 2, timeout=60, what="restarted")
            await wait_until(lambda: app.view.tray is TrayState.EXIT_NODE, timeout=30, what="choices restored")
            assert ("VPN helper stopped", "The VPN helper stopped; meshvpn is restarting it.") in app.notified
        finally:
            await stop(app, task)
        assert app.supervisor.strategies[0].proc.returncode is not None, "our child helper is stopped on quit"

    run(qloop, main(), timeout=120)


def test_single_instance(qapp, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first = SingleInstance("meshgui-test-single")
    shown = []
    first.on_show = lambda: shown.append(True)
    assert first.acquire()
    try:
        second = SingleInstance("meshgui-test-single")
        assert not second.acquire()
        assert second.ask_first_to_show()
        deadline = 200
        while not shown and deadline:
            qapp.processEvents()
            import time

            time.sleep(0.01)
            deadline -= 1
        assert shown
    finally:
        first.release()


@pytest.mark.skipif(not HAVE_KEYRING_DAEMON, reason="gnome-keyring / dbus-daemon not installed")
def test_supervisor_with_our_helper_restores_state_after_crash(qapp, qloop, env, keyring_backend):
    """Our real helper (fake engine, --prefs) started by the supervisor, SIGKILLed, restarted; the GUI hands its
    keyring keys over again, the saved login resumes under them and the GUI returns to the exit node."""
    import shlex
    import tempfile

    from meshgui.keys import KeyStore
    from tests.gui.helper_proc import helper_argv

    work = tempfile.mkdtemp(prefix="meshgui-sup-")
    sock = os.path.join(work, "meshvpn.sock")
    os.environ["MESH_TESTING"] = "1"
    app = App(
        qapp,
        parse_args(
            [
                "--socket",
                sock,
                "--settings",
                str(env / "gui.ini"),
                "--helper-command",
                shlex.join(helper_argv(sock, work)),
            ]
        ),
        keystore=KeyStore(keyring_backend),
    )
    os.chdir(ROOT)

    async def main():
        task = await start(app)
        try:
            await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN, timeout=60, what="helper started")
            app.on_action("login", "")
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED and app.view.peers, what="logged in")
            exit1 = next(p for p in app.view.peers if p.name == "exit1")
            app.on_action("set_exit_node", exit1.id)
            app.on_action("allow_lan", True)
            await wait_until(lambda: app.view.tray is TrayState.EXIT_NODE and app.view.allow_lan)
            await wait_until(lambda: app.settings.choices.exit_node_id == exit1.id)
            os.kill(app.supervisor.strategies[0].proc.pid, signal.SIGKILL)
            await wait_until(lambda: app.view.tray is TrayState.HELPER_DOWN, what="crash shown")
            await wait_until(lambda: app.supervisor.status.starts == 2, timeout=60, what="restarted")
            await wait_until(
                lambda: app.view.tray is TrayState.EXIT_NODE and app.view.allow_lan,
                timeout=30,
                what="same state after restart",
            )
        finally:
            await stop(app, task)

    try:
        run(qloop, main(), timeout=150)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
