"""OS DNS through systemd-resolved (per-link DNS on the TUN via `resolvectl`), when resolved is running."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Protocol, Sequence

from engine.dns.osconfig import OSDNSConfig

RESOLVED_RUN_DIR = Path("/run/systemd/resolve")


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str: ...


def resolved_available(run_dir: Path = RESOLVED_RUN_DIR, which=shutil.which) -> bool:
    """systemd-resolved is usable iff resolvectl exists and resolved's runtime dir is there."""
    return which("resolvectl") is not None and (run_dir / "resolv.conf").exists()


def resolvectl_commands(link: str, cfg: OSDNSConfig | None) -> list[list[str]]:
    """The resolvectl invocations that make `link` carry `cfg` (pure). None/empty -> revert."""
    if cfg is None or cfg.is_empty():
        return [["resolvectl", "revert", link]]
    domains = list(cfg.search_domains)
    domains += [f"~{d}" for d in cfg.match_domains if d not in cfg.search_domains]
    if cfg.route_all:
        domains.append("~.")
    return [
        ["resolvectl", "dns", link, *cfg.nameservers],
        ["resolvectl", "domain", link, *domains],
        ["resolvectl", "default-route", link, "true" if cfg.route_all else "false"],
        ["resolvectl", "llmnr", link, "no"],
        ["resolvectl", "mdns", link, "no"],
    ]


class ResolvedConfigurator:
    """Sets per-link DNS on the TUN. Link state in resolved vanishes with the link, so no journal is needed."""

    def __init__(self, link: str, runner: Runner, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.link = link
        self._run = runner
        self._log = logger or logging.getLogger("meshvpn.dns.resolved")
        self._last: OSDNSConfig | None = None

    def set(self, cfg: OSDNSConfig | None) -> None:
        if cfg == self._last:
            return
        for argv in resolvectl_commands(self.link, cfg):
            self._run(argv, check=argv[1] != "revert")
        self._last = None if cfg is None or cfg.is_empty() else cfg

    def cleanup_leftovers(self) -> bool:
        self._run(["resolvectl", "revert", self.link], check=False)
        return False
