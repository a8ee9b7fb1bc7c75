"""The serve engine's node (DaemonEngine + its Node) on recording fakes: no TUN, routes, nft or OS DNS changes."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from engine.ipn import daemon_engine
from engine.ipn.daemon_engine import DaemonEngine, node_prefs_args
from engine.ipn.engine_api import EngineConfig
from engine.wgengine.options import EngineOptions

CONTROL = "http://127.0.0.1:1"


class Rec:
    """A recording fake for Device / LinuxRouter / ExitRouter / Forwarder."""

    def __init__(self) -> None:
        self.calls: list = []
        self.listen_port = 41641
        self.allowed: dict[bytes, tuple] = {}

    def __getattr__(self, name):
        def f(*a, **kw):
            self.calls.append((name, a, kw))
            if name == "upsert_peer":
                self.allowed[a[0]] = tuple(kw["allowed_ips"])
            if name == "cleanup_leftovers":
                return []
        return f

    def last(self, name):
        return [c for c in self.calls if c[0] == name][-1][1]


def config(**prefs: Any) -> EngineConfig:
    """The EngineConfig the backend derives from its prefs (engine.ipn.backend.engine_config)."""
    return EngineConfig(control_url=CONTROL, **prefs)


def engine_node(tmp_path: Path, cfg: EngineConfig | None = None, *, tun: str = "mesh9"
                ) -> tuple[DaemonEngine, Any, dict[str, Rec]]:
    """A DaemonEngine holding a node started from ``cfg`` as DaemonEngine.start starts it, on fakes (not run).

    Change prefs the serve way: ``reconfigure(eng, config(...))`` (Backend -> DaemonEngine.reconfigure).
    """
    cfg = cfg or config()
    o = EngineOptions(tun_name=tun, run_dir=tmp_path)
    args = argparse.Namespace(
        login_server=cfg.control_url, auth_key=None, state=None, hostname=cfg.hostname or None, tun=tun,
        port=o.listen_port, mtu=o.mtu, derp_region=o.derp_region, watchdog=o.map_watchdog,
        endpoint_interval=o.endpoint_interval, status_file=None, logout_on_exit=False, verbose=False,
        run_dir=str(tmp_path), dns_mode=o.dns_mode, **node_prefs_args(cfg))
    fakes = {k: Rec() for k in ("device", "router", "exit", "fwd")}
    n = daemon_engine.Node(args, daemon_engine.NodeState.generate(), None, logging.getLogger("test"),
                           device_factory=lambda: fakes["device"], router_factory=lambda: fakes["router"],
                           exit_router_factory=lambda: fakes["exit"], forwarder_factory=lambda: fakes["fwd"])
    n._open_os_routing()
    n._open_dataplane()
    eng = DaemonEngine(o)
    eng._node = n
    return eng, n, fakes


def reconfigure(eng: DaemonEngine, cfg: EngineConfig) -> list:
    """DaemonEngine.reconfigure(cfg) as the backend calls it on a prefs edit; returns the engine events sent."""
    events: list = []
    eng._sink = events.append
    asyncio.run(eng.reconfigure(cfg))
    return events
