"""Attacks on the GUI: non-http(s) login URLs, and a socket served by someone other than root asking for keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QDesktopServices

from meshgui.app import App, parse_args
from meshgui.bridge import browser_url_problem
from meshgui.keys import DeviceKeys, PrivateKey
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.fake_localapi import FakeLocalAPI
from tests.helper.conftest import helper_env, make_user  # noqa: F401  (fixture: throwaway users)

SCHEMES = ("http", "https", "file", "javascript", "smb", "ftp", "data", "x-evil")


class _UrlCatcher(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    @Slot("QUrl")
    def open(self, url) -> None:
        self.urls.append(url.toString())


@pytest.fixture
def catcher():
    """Every scheme's "browser" is this catcher: nothing really opens, and we see what would have."""
    c = _UrlCatcher()
    for s in SCHEMES:
        QDesktopServices.setUrlHandler(s, c, "open")
    try:
        yield c
    finally:
        for s in SCHEMES:
            QDesktopServices.unsetUrlHandler(s)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


class MemoryKeys:
    """A keystore that hands out fresh keys (the real one needs a Secret Service)."""

    def __init__(self) -> None:
        self.keys = DeviceKeys(PrivateKey.generate(), PrivateKey.generate())

    def load_or_create(self) -> DeviceKeys:
        return self.keys


def make_app(qapp, tmp_path: Path, sock: str, **kw) -> App:
    args = parse_args(["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise"])
    return App(qapp, args, **kw)


async def stop(app: App, task: asyncio.Future) -> None:
    app.quit()
    await asyncio.wait_for(asyncio.shield(task), 20)
    app.window.close()


@pytest.mark.parametrize(
    "url,ok",
    [
        ("https://login.example.com/a/abc", True),
        ("http://127.0.0.1:9/login/abc123", True),
        ("HTTPS://login.example.com/a", True),
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("smb://evil.example/share", False),
        ("data:text/html,<script>x</script>", False),
        ("//login.example.com/a", False),
        (" https://login.example.com/a", False),
        ("https://login.example.com/a\nfile:///x", False),
        ("http:///nohost", False),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_browser_url_problem(url, ok):
    assert (browser_url_problem(url) == "") is ok


@pytest.mark.parametrize(
    "evil", ["file:///etc/passwd", "javascript:alert(document.cookie)", "smb://evil.example/s", "x-evil://run?cmd=id"]
)
def test_login_url_from_helper_with_other_scheme_is_refused(qapp, qloop, env, catcher, evil, caplog):
    with FakeLocalAPI(str(env / "helper.sock"), backend="NeedsLogin") as fake:
        fake.login_url = evil
        app = make_app(qapp, env, str(env / "helper.sock"))

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN, what="needs login")
                app.on_action("login", "")
                await wait_until(
                    lambda: any("login page was not opened" in b for _, b in app.notified), what="refusal shown"
                )
                assert app.bridge.refused_urls == 1
                # the dialog's "Open again" and the menu's open_url action are refused as well
                app.on_action("open_url", evil)
                assert app.open_url(evil) is False
                assert any(t == "Login page not opened" for t, _ in app.notified)
                await asyncio.sleep(0.2)
                assert catcher.urls == []
            finally:
                await stop(app, task)

        run(qloop, main())
    assert "refused to open the login address from the helper" in caplog.text
    assert evil not in caplog.text  # the address itself is not logged


def test_https_and_http_login_urls_still_open(qapp, qloop, env, catcher):
    with FakeLocalAPI(str(env / "helper.sock"), backend="NeedsLogin") as fake:
        fake.login_url = "https://login.example.com/a/abc123"
        app = make_app(qapp, env, str(env / "helper.sock"))

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(lambda: app.view.tray is TrayState.NEEDS_LOGIN)
                app.on_action("login", "")
                await wait_until(lambda: catcher.urls, what="browser opened")
                assert catcher.urls == [fake.login_url]
                assert app.open_url("http://127.0.0.1:9/x") is True
            finally:
                await stop(app, task)

        run(qloop, main())


# ------------------------------------------------------------------ keys only to root's helper

SERVE = r"""
import json, signal, sys, threading
from tests.gui.fake_localapi import FakeLocalAPI
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
with FakeLocalAPI(sys.argv[1], backend="Running") as fake:
    print("ready", flush=True)
    done.wait()
    print(json.dumps({"keys": len(fake.received_keys), "paths": sorted({p for _, p in fake.requests})}), flush=True)
"""


@pytest.fixture
def user_fake(make_user):  # noqa: F811
    """A fake helper LocalAPI run by a throwaway unprivileged user (an impostor on the socket path)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs the impostor as another user")
    u = make_user()
    d = tempfile.mkdtemp(prefix="meshgui-impostor-")
    os.chmod(d, 0o755)
    os.chown(d, u.uid, -1)
    sock = os.path.join(d, "meshvpn.sock")
    proc = subprocess.Popen(
        u.argv(sys.executable, "-c", SERVE, sock),
        env=helper_env(),
        cwd=helper_env()["PYTHONPATH"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    result: dict = {}
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:] if proc.poll() is not None else ""

        def finish() -> dict:
            proc.terminate()
            out, _ = proc.communicate(timeout=15)
            result.update(json.loads(out.strip().splitlines()[-1]))
            return result

        yield u, sock, finish
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def test_keys_are_not_handed_to_a_helper_not_run_by_root(qapp, qloop, env, user_fake, caplog):
    u, sock, finish = user_fake
    keystore = MemoryKeys()
    app = make_app(qapp, env, sock, keystore=keystore)

    async def main():
        task = asyncio.ensure_future(app.run())
        try:
            await wait_until(lambda: app.view.tray is TrayState.CONNECTED, what="connected (read side works)")
            await wait_until(lambda: app.trust_error, what="refusal")
            assert f"user {u.name} (uid {u.uid})" in app.trust_error and "not the meshvpn helper" in app.trust_error
            assert "did not give this device's keys" in app.trust_error
            assert ("Keys not handed over", app.trust_error) in app.notified
            assert app.window.banner.text() == app.trust_error
            assert not app._keys_accepted
        finally:
            await stop(app, task)

    run(qloop, main())
    got = finish()
    assert got["keys"] == 0 and "/localapi/v0/meshvpn/keys" not in got["paths"], got
    secret = keystore.keys.node.to_text()
    assert secret not in caplog.text and secret[8:] not in caplog.text


def test_explicit_trust_override_hands_keys_to_that_uid(qapp, qloop, env, user_fake):
    """The test-only override is a constructor argument: trusting the impostor's uid lets the keys through."""
    u, sock, finish = user_fake
    app = make_app(qapp, env, sock, keystore=MemoryKeys(), trusted_helper_uids=frozenset({0, u.uid}))

    async def main():
        task = asyncio.ensure_future(app.run())
        try:
            await wait_until(lambda: app._keys_accepted, what="keys accepted")
            assert app.trust_error == ""
        finally:
            await stop(app, task)

    run(qloop, main())
    assert finish()["keys"] == 1


def test_keys_refused_when_the_socket_file_is_not_roots(qapp, qloop, env, make_user):  # noqa: F811
    """A root-served socket whose file someone else owns is refused too (both checks must pass)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: chowns the socket file")
    u = make_user()
    sock = str(env / "helper.sock")
    with FakeLocalAPI(sock, backend="Running") as fake:
        os.chown(sock, u.uid, -1)
        app = make_app(qapp, env, sock, keystore=MemoryKeys())

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(lambda: app.trust_error, what="refusal")
                assert "the socket file" in app.trust_error and f"uid {u.uid}" in app.trust_error
            finally:
                await stop(app, task)

        run(qloop, main())
        assert fake.received_keys == []
        with contextlib.suppress(OSError):
            os.chown(sock, 0, -1)
