"""A real `mesh-helper serve` (fake engine rotating the node key at login): who on the LocalAPI gets the new key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from engine.localapi.client import LocalClient
from engine.localapi.schema import NotifyWatchOpt, Options, Prefs
from engine.types.keys import MachinePrivate, NodePrivate
from tests.helper.conftest import REPO, HelperProc, helper_env

WATCHER = """
import asyncio, sys
from engine.localapi.client import AccessDenied, LocalClient
async def main():
    c = LocalClient(sys.argv[1], timeout=30)
    try:
        async for n in c.watch_ipn_bus(int(sys.argv[2])):
            print(n.to_json(), flush=True)
            if n.node_key_rotated is not None:
                return
    except AccessDenied as e:
        print("DENIED " + e.message, flush=True)
asyncio.run(asyncio.wait_for(main(), 60))
"""
INITIAL = int(NotifyWatchOpt.INITIAL_STATE)
NO_PRIVATE = int(NotifyWatchOpt.NO_PRIVATE_KEYS)


class Watcher:
    """A watch-ipn-bus client running as a given local user; its lines go to a file."""

    def __init__(self, user, sock: str, mask: int, out: Path) -> None:
        self.out = out
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                user.argv(sys.executable, "-c", WATCHER, sock, str(mask)),
                env=helper_env(),
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def wait_lines(self, n: int, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < n:
            if self.proc.poll() is not None and len(self.lines()) < n:
                raise AssertionError(f"watcher exited: {self.lines()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"watcher output: {self.lines()}")
            time.sleep(0.05)
        return self.lines()

    def finish(self, timeout: float = 30) -> list[str]:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        return self.lines()


def rotation(lines: list[str]) -> dict:
    for ln in lines:
        if ln.startswith("{") and "MeshvpnNodeKeyRotated" in ln:
            return json.loads(ln)["MeshvpnNodeKeyRotated"]
    raise AssertionError(f"no rotation in {lines}")


def test_only_the_key_owner_gets_the_rotated_private_key(shared_dir, make_user, monkeypatch):
    monkeypatch.setenv("MESH_FAKE_ROTATE_NODE_KEY", "1")
    operator, reader = make_user(), make_user()
    h = HelperProc(shared_dir, "--operator", operator.name)
    h.start()
    watchers: list[Watcher] = []
    try:
        # A reader must ask for private keys to be filtered out (tailscaled's rule).
        denied = Watcher(reader, h.socket, INITIAL, shared_dir / "denied.out").finish()
        assert denied and denied[0].startswith("DENIED") and "NotifyNoPrivateKeys" in denied[0]
        w_reader = Watcher(reader, h.socket, INITIAL | NO_PRIVATE, shared_dir / "reader.out")
        w_operator = Watcher(operator, h.socket, INITIAL, shared_dir / "operator.out")  # a writer, not the owner
        watchers = [w_reader, w_operator]
        for w in watchers:
            w.wait_lines(1)
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()

        async def owner() -> dict:
            c = LocalClient(h.socket, timeout=30)
            info = await c.set_keys(mk.to_text(), nk.to_text())  # root hands the keys over: the owner
            assert info.source == "gui" and info.node_public == str(nk.public())
            gen = c.watch_ipn_bus(NotifyWatchOpt.INITIAL_STATE)
            await gen.__anext__()
            await c.start(Options(update_prefs=Prefs(control_url="http://control.invalid", want_running=True)))
            async for n in gen:
                if n.node_key_rotated is not None:
                    rot = n.node_key_rotated
                    break
            await gen.aclose()
            now = await c.keys()
            assert now.node_public == rot.node_public != str(nk.public()) and now.source == "gui"
            # The owner keeps it and acknowledges by handing the new keys over.
            await c.set_keys(mk.to_text(), rot.node_private)
            return rot.to_dict()

        got = asyncio.run(asyncio.wait_for(owner(), 60))
        new = NodePrivate.from_text(got["NodeKey"])
        assert got["NodePublic"] == str(new.public()) and got["OldNodePublic"] == str(nk.public())
        for w in watchers:
            lines = w.finish()
            r = rotation(lines)
            assert r == {"NodePublic": str(new.public()), "OldNodePublic": str(nk.public())}
            assert "privkey:" not in "\n".join(lines)
        log = h.log()
        assert "node key rotated by control" in log and new.public().short() in log
        for k in (new, nk, mk):
            assert k.to_text()[8:] not in log
    finally:
        for w in watchers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(5)
        h.stop()
