"""A node key rotated by control lands in the GUI's keyring (real gnome-keyring, private D-Bus), surviving restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from engine.localapi.client import LocalClient
from engine.localapi.schema import Options, Prefs
from meshgui.app import App, parse_args
from meshgui.engine_client import GUI_OWNER_WATCH_MASK
from meshgui.keys import MACHINE_ENTRY, NODE_ENTRY, SERVICE, KeyStore, PrivateKey, node_public_text
from meshgui.state import TrayState
from tests.gui.aio import run, wait_until
from tests.gui.fake_localapi import FakeLocalAPI
from tests.gui.helper_proc import ROOT, helper_argv
from tests.gui.keyring_lab import HAVE_KEYRING_DAEMON
from tests.gui.sockproc import wait_for_socket
from tests.lab.netlab import stop_process

pytestmark = pytest.mark.skipif(not HAVE_KEYRING_DAEMON, reason="gnome-keyring / dbus-daemon not installed")


NODE_KEY_ROTATED = "MeshvpnNodeKeyRotated"  # the Notify key of meshvpn's extension (schema.Notify.node_key_rotated)


def make_app(qapp, tmp_path: Path, sock: str, keystore: KeyStore) -> App:
    args = parse_args(["--socket", sock, "--settings", str(tmp_path / "gui.ini"), "--no-supervise"])
    return App(qapp, args, keystore=keystore)


async def stop_app(app: App, task: asyncio.Future) -> None:
    app.quit()
    await asyncio.wait_for(asyncio.shield(task), 20)
    app.window.close()


def rotation(old: PrivateKey, new: PrivateKey, *, private: str | None = None, new_pub: str | None = None) -> dict:
    return {
        NODE_KEY_ROTATED: {
            "NodePublic": new_pub or node_public_text(new),
            "OldNodePublic": node_public_text(old),
            "NodeKey": new.to_text() if private is None else private,
        }
    }


def test_rotated_node_key_is_stored_in_the_keyring_and_handed_over_next_start(
    qapp, qloop, tmp_path, keyring_backend, caplog
):
    caplog.set_level(logging.DEBUG)
    sock = str(tmp_path / "helper.sock")
    store = KeyStore(keyring_backend)
    with FakeLocalAPI(sock, backend="Running") as fake:
        app = make_app(qapp, tmp_path, sock, store)

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(
                    lambda: app.view.tray is TrayState.CONNECTED and fake.received_keys, what="keys handed"
                )
                assert app._watch_mask() == GUI_OWNER_WATCH_MASK, "the keys' owner watches without NoPrivateKeys"
                first = PrivateKey.from_text(fake.received_keys[0]["NodeKey"])
                machine = fake.received_keys[0]["MachineKey"]
                # Nonsense first: a key that does not match its public half, and a rotation of a key we never had.
                stranger, new = PrivateKey.generate(), PrivateKey.generate()
                fake.push(rotation(first, new, new_pub=node_public_text(stranger)))
                fake.push(rotation(stranger, new))
                fake.push(
                    {NODE_KEY_ROTATED: {"NodePublic": node_public_text(new), "OldNodePublic": node_public_text(first)}}
                )  # public only: log line
                await asyncio.sleep(0.5)
                assert keyring_backend.get_password(SERVICE, NODE_ENTRY) == first.to_text()
                assert len(fake.received_keys) == 1
                # The real thing: stored, then acknowledged by handing the new keys over.
                fake.push(rotation(first, new))
                await wait_until(lambda: len(fake.received_keys) == 2, what="acknowledgement")
                assert fake.received_keys[1] == {"MachineKey": machine, "NodeKey": new.to_text()}
                assert keyring_backend.get_password(SERVICE, NODE_ENTRY) == new.to_text()
                assert keyring_backend.get_password(SERVICE, MACHINE_ENTRY) == machine
                assert new.to_text()[8:] not in repr(app.view), "the secret stays out of the view state"
                assert app.view.tray is TrayState.CONNECTED and app.notified == [], "nothing shown to the user"
            finally:
                await stop_app(app, task)
            return first, new

        first, new = run(qloop, main())
    # Next start: the app hands over what its KeyStore loads from the keyring (see "keys handed" above), which is
    # now the rotated node key. (A whole second App in this process is covered by the helper-restart test below.)
    nxt = KeyStore(keyring_backend).load_or_create()
    assert nxt.node.to_text() == new.to_text() and nxt.machine.to_text() != new.to_text()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "node key rotated by the control server" in logged and new.public_short() in logged
    for k in (first, new):
        assert k.to_text()[8:] not in logged


@contextlib.contextmanager
def helper_at(sock: str, work: str, env: dict) -> Iterator[subprocess.Popen]:
    """Our helper (tests.support.fake_helper) on a fixed socket, so the GUI can outlive it and reconnect."""
    with open(os.path.join(work, "helper.log"), "ab") as log:
        proc = subprocess.Popen(
            helper_argv(sock, work), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_socket(proc, sock, os.path.join(work, "helper.log"), "helper")
        yield proc
    finally:
        stop_process(proc)


def test_with_our_helper_a_rotation_at_login_survives_helper_and_gui_restarts(qapp, qloop, tmp_path, keyring_backend):
    """Real helper whose fake control makes the node re-register under a new key at login (expired key)."""
    work = tmp_path / "helper"
    work.mkdir()
    os.chmod(work, 0o755)
    sock = str(work / "meshvpn.sock")
    env = dict(os.environ, MESH_TESTING="1", PYTHONPATH=ROOT, MESH_FAKE_ROTATE_NODE_KEY="1")
    store = KeyStore(keyring_backend)

    async def keys_public() -> str:
        return (await LocalClient(sock, timeout=10).keys()).node_public

    with helper_at(sock, str(work), env):
        app = make_app(qapp, tmp_path, sock, store)

        async def main():
            task = asyncio.ensure_future(app.run())
            try:
                await wait_until(
                    lambda: app.view.tray is TrayState.NEEDS_LOGIN and app.keys is not None, what="GUI connected"
                )
                first = app.keys.node
                assert await keys_public() == node_public_text(first)
                # `meshctl up`-style start: the fake control logs in and rotates the node key.
                await LocalClient(sock, timeout=10).start(
                    Options(update_prefs=Prefs(control_url="http://control.invalid", want_running=True))
                )
                await wait_until(lambda: app.view.tray is TrayState.CONNECTED, what="connected")
                await wait_until(
                    lambda: (
                        keyring_backend.get_password(SERVICE, NODE_ENTRY) != first.to_text() and app.keys.node != first
                    ),
                    what="keyring updated",
                )
                stored = PrivateKey.from_text(keyring_backend.get_password(SERVICE, NODE_ENTRY))
                assert await keys_public() == node_public_text(stored), "keyring holds the key the helper runs"
                assert app.keys.node == stored
                assert not [n for n in app.notified if "key" in " ".join(n).lower()], "nothing about keys shown"
            finally:
                await stop_app(app, task)
            return first, stored

        first, stored = run(qloop, main(), timeout=90)
    assert stored != first
    # Both restarted: the GUI hands the helper the rotated key from the keyring (not the expired one).
    # (Without the prefs file: a helper that finds a saved login starts its engine with generated keys
    # before any GUI connects, which is a separate issue of `serve --prefs`.)
    (work / "prefs.json").unlink()
    with helper_at(sock, str(work), env):
        app2 = make_app(qapp, tmp_path, sock, KeyStore(keyring_backend))

        async def again():
            task = asyncio.ensure_future(app2.run())
            try:
                await wait_until(
                    lambda: app2.view.tray is TrayState.NEEDS_LOGIN and app2.keys is not None,
                    what="GUI connected again",
                )
                await wait_until(lambda: app2._keys_accepted, what="keys handed")
                return await keys_public()
            finally:
                await stop_app(app2, task)

        assert run(qloop, again(), timeout=60) == node_public_text(stored)
    log = (work / "helper.log").read_text(errors="replace")
    assert "node key rotated by control" in log
    for k in (first, stored):
        assert k.to_text()[8:] not in log
