"""A TailnetEngine on the fake System (tests/unit/wgengine/fakes.py), started and fed as the backend does."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.control.client import NetMapUpdated
from engine.ipn.engine_api import EngineConfig, NodeKeys
from engine.ipn.tailnet_engine import TailnetEngine
from engine.types.keys import MachinePrivate, NodePrivate
from engine.wgengine.options import EngineOptions
from tests.unit.wgengine.fakes import FakeWorld

URL = "http://127.0.0.1:1"  # nothing listens: the control client retries quietly in the background
TUN = "mesh9"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(fn: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not fn():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def config(**prefs: Any) -> EngineConfig:
    """The EngineConfig the backend derives from its prefs (engine.ipn.backend.engine_config), on TUN."""
    return EngineConfig(control_url=URL, **prefs)


async def running(
    cfg: EngineConfig | None = None, *, world: FakeWorld | None = None, **system_kw: Any
) -> tuple[TailnetEngine, FakeWorld, list, NodeKeys]:
    """A started TailnetEngine (engine up, control client built): (engine, world, events sent, keys)."""
    w = world or FakeWorld()
    eng = TailnetEngine(EngineOptions(tun_name=TUN), w.system(**system_kw), logger=logging.getLogger("t"))
    events: list = []
    keys = NodeKeys(MachinePrivate.generate(), NodePrivate.generate(), source="gui")
    await eng.start(cfg if cfg is not None else config(), keys, events.append)
    await until(lambda: eng._s is not None and eng._s.client is not None, "the control client")
    return eng, w, events, keys


def deliver(eng: TailnetEngine, nm: Any) -> None:
    """A netmap from control (the control client's NetMapUpdated event)."""
    eng._on_control_event(eng._s, NetMapUpdated(nm))


async def reconfigure(eng: TailnetEngine, events: list, cfg: EngineConfig) -> list:
    """TailnetEngine.reconfigure(cfg) as the backend calls it on a prefs edit; returns the events it sent."""
    n = len(events)
    await eng.reconfigure(cfg)
    return events[n:]
