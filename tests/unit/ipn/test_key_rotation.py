"""A node key rotated by control outlives the run: backend keeps it, only the keys' owner gets the private half."""

from __future__ import annotations

import asyncio
import json
import logging

from engine.control.client import NodeKeyRotated as ControlNodeKeyRotated
from engine.ipn.engine_api import NodeKeyRotated, NodeKeys
from engine.ipn.local import Backend
from engine.ipn.store import FileStore, MemoryStore
from engine.ipn.tailnet_engine import TailnetEngine
from engine.localapi.schema import (
    MaskedPrefs,
    NodeKeyRotation,
    Notify,
    NotifyWatchOpt,
    Prefs,
    SetKeysRequest,
    State,
)
from engine.types.keys import MachinePrivate, NodePrivate
from tests.support.fake_engine import FakeEngine

UP = Prefs(control_url="http://control.invalid", want_running=True)
OWNER, OTHER = 1000, 1001


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


def keys_req(mk: MachinePrivate, nk: NodePrivate) -> SetKeysRequest:
    return SetKeysRequest(machine_private=mk.to_text(), node_private=nk.to_text())


class Bus:
    """Several watchers of one backend, each collecting what it is sent."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.seen: dict[str, list[Notify]] = {}
        self.first: dict[str, Notify] = {}
        self._tasks: list[asyncio.Task] = []

    async def add(self, name: str, mask: NotifyWatchOpt, uid: int | None) -> None:
        gen = self.backend.watch(mask | NotifyWatchOpt.INITIAL_STATE, uid=uid)
        self.first[name] = await gen.__anext__()
        self.seen[name] = []

        async def collect():
            async for n in gen:
                self.seen[name].append(n)

        self._tasks.append(asyncio.get_running_loop().create_task(collect()))

    def rotations(self, name: str) -> list[NodeKeyRotation]:
        return [n.node_key_rotated for n in self.seen[name] if n.node_key_rotated is not None]

    def wire(self, name: str) -> str:
        return "\n".join(n.to_json() for n in [self.first[name], *self.seen[name]])

    async def close(self) -> None:
        await self.backend.aclose()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 5)


# ---------------------------------------------------------------- schema


def test_rotation_notify_round_trips_and_has_a_fixed_wire_form():
    new, old = NodePrivate.generate(), NodePrivate.generate()
    rot = NodeKeyRotation(node_public=str(new.public()), old_node_public=str(old.public()), node_private=new.to_text())
    n = Notify(version="v", node_key_rotated=rot)
    d = n.to_dict()
    assert d["MeshvpnNodeKeyRotated"] == {
        "NodePublic": str(new.public()),
        "OldNodePublic": str(old.public()),
        "NodeKey": new.to_text(),
    }
    assert Notify.from_json(n.to_json()) == n
    assert Notify.from_dict(d).to_dict() == d
    # the public view drops "NodeKey" entirely (omitempty), nothing else
    pub = n.without_private_keys()
    assert "NodeKey" not in pub.to_dict()["MeshvpnNodeKeyRotated"]
    assert pub.node_key_rotated.node_public == rot.node_public and Notify.from_json(pub.to_json()) == pub
    # a notify without the extension is untouched (same object) and emits no key for it
    plain = Notify(version="v", state=State.RUNNING)
    assert plain.without_private_keys() is plain and "MeshvpnNodeKeyRotated" not in plain.to_dict()


def test_rotation_reprs_never_show_the_private_key():
    new, old = NodePrivate.generate(), NodePrivate.generate()
    rot = NodeKeyRotation(node_public=str(new.public()), old_node_public=str(old.public()), node_private=new.to_text())
    secret = new.to_text()[len("privkey:") :]
    for text in (
        repr(rot),
        str(rot),
        repr(Notify(node_key_rotated=rot)),
        repr(NodeKeyRotated(old.public(), new)),
        str(NodeKeyRotated(old.public(), new)),
    ):
        assert secret not in text, text
    assert "<redacted>" in repr(rot)
    assert new.public().short() in repr(NodeKeyRotated(old.public(), new))


# ---------------------------------------------------------------- backend + fake engine


def test_rotation_updates_keys_and_only_the_owner_watcher_sees_the_private_key(caplog):
    caplog.set_level(logging.DEBUG)

    async def t():
        engine = FakeEngine()
        b = Backend(engine, store=MemoryStore(), os_hostname=lambda: "testhost")
        await b.start()
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()
        b.set_keys(keys_req(mk, nk), owner_uid=OWNER)
        bus = Bus(b)
        await bus.add("owner", NotifyWatchOpt(0), OWNER)
        await bus.add("owner-no-private", NotifyWatchOpt.NO_PRIVATE_KEYS, OWNER)
        await bus.add("other-uid", NotifyWatchOpt(0), OTHER)
        await bus.add("in-process", NotifyWatchOpt(0), None)
        await b.start_with(update_prefs=UP)
        await settle()
        assert b.state == State.RUNNING
        new = await engine.rotate_node_key()
        await settle()
        # backend: new node key, same machine key, still the GUI's
        assert b.keys.node == new and b.keys.machine == mk and b.keys.source == "gui"
        assert b.keys_info().node_public == str(new.public())
        assert b.status().self.public_key == str(new.public())
        # owner: the private half, exactly once
        [rot] = bus.rotations("owner")
        assert rot.node_private == new.to_text()
        assert (rot.node_public, rot.old_node_public) == (str(new.public()), str(nk.public()))
        # everyone else: the public halves, never the private one
        for name in ("owner-no-private", "other-uid", "in-process"):
            [r] = bus.rotations(name)
            assert (r.node_public, r.old_node_public, r.node_private) == (str(new.public()), str(nk.public()), "")
            assert new.to_text()[8:] not in bus.wire(name)
        await bus.close()
        return new, nk

    new, old = run(t())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert new.public().short() in logged and "node key rotated" in logged
    for k in (new, old):
        assert k.to_text()[8:] not in logged


def test_missed_rotation_is_offered_again_and_the_superseded_key_cannot_come_back():
    async def t():
        engine = FakeEngine()
        b = Backend(engine, store=MemoryStore())
        await b.start()
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()
        b.set_keys(keys_req(mk, nk), owner_uid=OWNER)
        await b.start_with(update_prefs=UP)
        await settle()
        first = await engine.rotate_node_key()  # nobody watching: the GUI misses it
        second = await engine.rotate_node_key()
        await settle()
        # The GUI (re)starts with the key from its keyring: the original, now twice superseded.
        info = b.set_keys(keys_req(mk, nk), owner_uid=OWNER)
        assert info.node_public == str(second.public()) and b.keys.node == second
        bus = Bus(b)
        await bus.add("owner", NotifyWatchOpt(0), OWNER)
        await bus.add("other", NotifyWatchOpt(0), OTHER)
        await bus.add("owner-no-private", NotifyWatchOpt.NO_PRIVATE_KEYS, OWNER)
        pending = bus.first["owner"].node_key_rotated
        assert pending is not None and pending.node_private == second.to_text()
        assert pending.old_node_public == str(nk.public()), "relative to the key the GUI's keyring holds"
        assert bus.first["other"].node_key_rotated is None and bus.first["owner-no-private"].node_key_rotated is None
        # Disconnected, the superseded keys still do not replace the new one.
        await b.edit_prefs(MaskedPrefs(Prefs(want_running=False), frozenset({"WantRunning"})))
        assert b.state == State.STOPPED
        for old in (nk, first):
            b.set_keys(keys_req(mk, old), owner_uid=OWNER)
            assert b.keys.node == second
        # The GUI stored it and hands the new keys over: acknowledged, no longer offered.
        b.set_keys(keys_req(mk, second), owner_uid=OWNER)
        await bus.add("owner-later", NotifyWatchOpt(0), OWNER)
        assert bus.first["owner-later"].node_key_rotated is None
        # A deliberately new key pair (not a superseded one) still replaces the keys while stopped.
        mk2, nk2 = MachinePrivate.generate(), NodePrivate.generate()
        b.set_keys(keys_req(mk2, nk2), owner_uid=OWNER)
        assert b.keys.node == nk2
        await bus.close()

    run(t())


def test_after_a_restart_the_stored_key_logs_in_and_the_old_one_needs_login():
    """Control (the FakeEngine's `registered`) knows only the rotated key; a restart with it needs no login."""

    async def t():
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()
        keyring = {"machine": mk, "node": nk}  # what the GUI keeps
        engine = FakeEngine(rotate_on_login=True)
        b = Backend(engine, store=MemoryStore())
        await b.start()
        b.set_keys(keys_req(keyring["machine"], keyring["node"]), owner_uid=OWNER)
        bus = Bus(b)
        await bus.add("gui", NotifyWatchOpt(0), OWNER)
        await b.start_with(update_prefs=UP)
        await settle()
        assert b.state == State.RUNNING and engine.rotations == 1
        [rot] = bus.rotations("gui")
        keyring["node"] = NodePrivate.from_text(rot.node_private)  # the GUI stores it
        b.set_keys(keys_req(keyring["machine"], keyring["node"]), owner_uid=OWNER)  # ...and acknowledges
        await bus.close()
        control_knows = engine.registered

        async def restart(node: NodePrivate) -> State:
            e2 = FakeEngine(auto_login=False)
            e2.registered = set(control_knows)
            b2 = Backend(e2, store=MemoryStore())
            await b2.start()
            b2.set_keys(keys_req(keyring["machine"], node), owner_uid=OWNER)
            await b2.start_with(update_prefs=UP)
            await settle()
            st = b2.state
            await b2.aclose()
            return st

        assert await restart(keyring["node"]) == State.RUNNING
        assert await restart(nk) == State.NEEDS_LOGIN, "the pre-rotation key is expired at control"

    run(t())


def test_headless_state_file_keeps_the_rotated_key_and_sends_no_private_key(tmp_path):
    async def t():
        path = tmp_path / "state.json"
        mk, nk = MachinePrivate.generate(), NodePrivate.generate()
        FileStore(path, keep_keys=True).save(Prefs(), NodeKeys(mk, nk, source="state-file"))
        engine = FakeEngine()
        b = Backend(engine, store=FileStore(path, keep_keys=True))
        await b.start()
        assert b.keys.source == "state-file"
        bus = Bus(b)
        await bus.add("root", NotifyWatchOpt(0), 0)
        await b.start_with(update_prefs=UP)
        await settle()
        new = await engine.rotate_node_key()
        await settle()
        assert b.keys.node == new and b.keys.source == "state-file"
        [r] = bus.rotations("root")
        assert r.node_private == "" and r.node_public == str(new.public())
        assert new.to_text()[8:] not in bus.wire("root")
        await bus.close()
        st = FileStore(path, keep_keys=True).load()
        assert st.keys is not None and st.keys.node == new and st.keys.machine == mk

    run(t())


# ---------------------------------------------------------------- the real engine adapter


def test_real_engine_reports_rotation_and_moves_the_data_plane_to_the_new_key(caplog):
    from engine.control.client import ControlClient
    from engine.ipn.engine_api import EngineConfig
    from engine.wgengine.options import EngineOptions
    from tests.unit.wgengine.fakes import FakeWorld

    caplog.set_level(logging.DEBUG)

    async def t():
        world = FakeWorld()
        engine = TailnetEngine(EngineOptions(tun_name="mesh9"), world.system(), logger=logging.getLogger("test.node"))
        events: list = []
        old, new = NodePrivate.generate(), NodePrivate.generate()
        await engine.start(
            EngineConfig(control_url="http://127.0.0.1:1"), NodeKeys(MachinePrivate.generate(), old), events.append
        )
        for _ in range(500):
            if engine._s is not None and isinstance(engine._s.client, ControlClient):
                break
            await asyncio.sleep(0.01)
        engine._on_control_event(engine._s, ControlNodeKeyRotated(old.public(), new))
        assert engine._s.keys.node == new
        assert world.log.of("device", "set_private_key")[-1] == (new.raw,)
        [ev] = [e for e in events if isinstance(e, NodeKeyRotated)]
        assert ev.new_private == new and ev.old_public == old.public()
        await engine.aclose()
        return new

    new = run(t())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert new.public().short() in logged and new.to_text()[8:] not in logged and "still has the old key" not in logged


def test_fake_engine_rotates_once_at_first_login_when_asked(monkeypatch):
    monkeypatch.setenv("MESH_FAKE_ROTATE_NODE_KEY", "1")

    async def t():
        engine = FakeEngine()
        assert engine.rotate_on_login
        b = Backend(engine, store=MemoryStore())
        await b.start()
        nk = NodePrivate.generate()
        b.set_keys(keys_req(MachinePrivate.generate(), nk), owner_uid=OWNER)
        await b.start_with(update_prefs=UP)
        await settle()
        assert engine.rotations == 1 and b.keys.node != nk and b.state == State.RUNNING
        nm = b.status()
        assert nm.self.public_key == str(b.keys.node.public())
        await b.aclose()

    run(t())
    monkeypatch.delenv("MESH_FAKE_ROTATE_NODE_KEY")
    assert not FakeEngine().rotate_on_login


def test_notify_json_lines_of_an_owner_carry_the_key_in_the_keys_wire_name():
    """The GUI reads {"MeshvpnNodeKeyRotated": {"NodeKey": "privkey:…"}}: the SetKeysRequest name for a node key."""
    new = NodePrivate.generate()
    line = Notify(node_key_rotated=NodeKeyRotation(node_public=str(new.public()), node_private=new.to_text())).to_json()
    got = json.loads(line)["MeshvpnNodeKeyRotated"]
    assert SetKeysRequest.from_dict({"MachineKey": "", "NodeKey": got["NodeKey"]}).node_private == new.to_text()
