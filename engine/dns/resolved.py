"""OS DNS through systemd-resolved (per-link DNS on the TUN via `resolvectl`), when resolved is running."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Protocol, Sequence

from engine.dns.names import ip_literals, valid_domains
from engine.dns.osconfig import OSDNSConfig

RESOLVED_RUN_DIR = Path("/run/systemd/resolve")


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str: ...


ETC_RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_STUB = "127.0.0.53"


def resolv_conf_uses_resolved(etc_resolv: Path = ETC_RESOLV_CONF) -> bool:
    """/etc/resolv.conf hands queries to resolved: a link into its runtime dir, its stub address, or its banner."""
    try:
        if etc_resolv.is_symlink() and "/systemd/resolve/" in str(etc_resolv.resolve()):
            return True
        text = etc_resolv.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["nameserver", RESOLVED_STUB]:
            return True
        if line.startswith("#") and "systemd-resolved" in line:
            return True
    return False


def resolved_available(
    run_dir: Path = RESOLVED_RUN_DIR, which=shutil.which, etc_resolv: Path = ETC_RESOLV_CONF
) -> bool:
    """Use resolved iff resolvectl exists, resolved runs (its runtime resolv.conf) and the system resolves through it.

    A resolved that runs while /etc/resolv.conf names other servers ("foreign" mode) would ignore
    per-link settings for most programs, so then resolv.conf is managed directly (as tailscale does).
    """
    return (
        which("resolvectl") is not None and (run_dir / "resolv.conf").exists() and resolv_conf_uses_resolved(etc_resolv)
    )


def resolvectl_commands(link: str, cfg: OSDNSConfig | None) -> list[list[str]]:
    """The resolvectl invocations that make `link` carry `cfg` (pure). None/empty -> revert.

    Domains and nameservers that are not DNS names / IP literals are left out (logged), so none can
    be taken for an option ('-...') or split into more arguments; a bad link name is a ValueError.
    """
    if not link or link.startswith("-") or not link.isprintable() or " " in link:
        raise ValueError(f"bad link name {link!r}")
    if cfg is None or cfg.is_empty():
        return [["resolvectl", "revert", link]]
    search = valid_domains(cfg.search_domains)
    domains = list(search)
    domains += [f"~{d}" for d in valid_domains(cfg.match_domains, "split-DNS domain") if d not in search]
    if cfg.route_all:
        domains.append("~.")
    return [
        ["resolvectl", "dns", link, *ip_literals(cfg.nameservers)],
        ["resolvectl", "domain", link, *domains],
        ["resolvectl", "default-route", link, "true" if cfg.route_all else "false"],
        ["resolvectl", "llmnr", link, "no"],
        ["resolvectl", "mdns", link, "no"],
        # MagicDNS answers are unsigned and quad-100 speaks plain DNS: a global DNSSEC=yes or
        # DNSOverTLS=yes in resolved.conf must not apply to this link (tailscale turns both off too)
        ["resolvectl", "dnssec", link, "no"],
        ["resolvectl", "dnsovertls", link, "no"],
    ]


class ResolvedConfigurator:
    """Sets per-link DNS on the TUN. Link state in resolved vanishes with the link, so no journal is needed.

    Checked against a real systemd-resolved 252 in tests/resolved: the link's settings go away
    on `revert` and when the TUN is deleted (stop, SIGKILL); a leftover on a link that outlived
    us (persistent TUN) is reverted by cleanup_leftovers(); revert on a vanished link fails
    harmlessly (resolvectl: "No such device"), hence check=False.
    """

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
        self._run(["resolvectl", "flush-caches"], check=False)  # no stale answers cached from before the change
        self._last = None if cfg is None or cfg.is_empty() else cfg
        if self._last is None:
            self._log.info("systemd-resolved: DNS on %s reverted", self.link)
        else:
            self._log.info(
                "systemd-resolved: %s -> %s (%s)",
                self.link,
                ", ".join(cfg.nameservers),
                "all names"
                if cfg.route_all
                else "split: " + " ".join(dict.fromkeys((*cfg.search_domains, *cfg.match_domains))),
            )

    def cleanup_leftovers(self) -> bool:
        self._run(["resolvectl", "revert", self.link], check=False)
        return False
