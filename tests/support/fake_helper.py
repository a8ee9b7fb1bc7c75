"""`python -m tests.support.fake_helper serve [serve flags] [--manual-login] [--fake-system]`: serve with FakeEngine."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from engine import service
from engine.ipn.engine_api import EngineConfig, NodeEngine
from engine.recovery.journal import Change, Journal
from engine.wgengine.options import EngineOptions
from tests.support.fake_engine import FakeEngine

USAGE = """\
usage: python -m tests.support.fake_helper serve [mesh-helper serve flags] [--manual-login] [--fake-system]

  --manual-login  the fake control wants an interactive login (default: every start logs in)
  --fake-system   make a journaled TUN + route + rule while logged in (lab tests of hygiene; needs root)

Needs MESH_TESTING=1. MESH_FAKE_ROTATE_NODE_KEY=1: control replaces the node key at the first login.
"""
EXIT_USAGE = 2
OWN_FLAGS = ("--manual-login", "--fake-system")


def fake_system_hooks(journal: Journal, tun: str) -> tuple[Any, Any]:
    """For lab tests of hygiene: a journaled TUN + route + rule while the fake engine 'runs'."""
    ids: list[int] = []

    async def up(cfg: EngineConfig) -> None:
        ids.append(journal.apply(Change.link(tun), ["ip", "tuntap", "add", "dev", tun, "mode", "tun"]))
        journal.run(["ip", "addr", "add", "100.64.0.1/32", "dev", tun])
        journal.run(["ip", "link", "set", "dev", tun, "up"])
        ids.append(
            journal.apply(
                Change.route("100.64.0.0/10", dev=tun, table=52),
                ["ip", "route", "add", "100.64.0.0/10", "dev", tun, "table", "52"],
            )
        )
        ids.append(
            journal.apply(Change.rule(5270, table=52), ["ip", "-4", "rule", "add", "priority", "5270", "table", "52"])
        )

    async def down() -> None:
        while ids:
            journal.revert(ids.pop())

    return up, down


def fake_engine_factory(*, manual_login: bool = False, fake_system: bool = False) -> service.EngineFactory:
    """An engine_factory for engine.service: a FakeEngine, optionally with real journaled system changes."""

    def build(options: EngineOptions, journal: Journal, log: logging.Logger) -> NodeEngine:
        hooks = fake_system_hooks(journal, options.tun_name) if fake_system else None
        return FakeEngine(auto_login=not manual_login, system_hooks=hooks)

    return build


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if args[:1] != ["serve"]:
        sys.stderr.write(USAGE)
        return EXIT_USAGE
    if os.environ.get("MESH_TESTING") != "1":
        print("tests.support.fake_helper: the fake engine is for tests only (MESH_TESTING=1)", file=sys.stderr)
        return EXIT_USAGE
    rest = args[1:]
    factory = fake_engine_factory(manual_login="--manual-login" in rest, fake_system="--fake-system" in rest)
    return service.main([a for a in rest if a not in OWN_FLAGS], engine_factory=factory)


if __name__ == "__main__":
    sys.exit(main())
