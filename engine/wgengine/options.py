"""EngineOptions: the engine's fixed start-up settings (frozen; set once by `mesh-helper serve`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_TUN = "meshvpn0"
DEFAULT_MTU = 1280  # tailscaled's default TUN MTU
DEFAULT_DERP_REGION = 999  # headscale's embedded DERP region, until netcheck finds a home region
DEFAULT_RUN_DIR = Path("/run/meshvpn")  # holds the journal of OS changes when no journal is handed over
DNS_MODES = ("auto", "resolv.conf", "resolved", "none")


@dataclass(frozen=True)
class EngineOptions:
    """What does not change while the helper runs: interface, port, journals, OS DNS method, timers."""

    tun_name: str = DEFAULT_TUN
    listen_port: int = 0  # WireGuard/magicsock UDP port (0 = random)
    mtu: int = DEFAULT_MTU
    derp_region: int = DEFAULT_DERP_REGION  # PreferredDERP published before netcheck has one
    dns_mode: str = "auto"  # how OS DNS is configured: auto, resolv.conf, resolved, none
    run_dir: Path = DEFAULT_RUN_DIR  # its changes.jsonl: the journal of OS changes if the engine is given none
    endpoint_interval: float = 10.0  # seconds between re-scans of the local endpoints
    map_watchdog: float = 120.0  # seconds without map-stream traffic before control reconnects

    def __post_init__(self) -> None:
        if not self.tun_name or len(self.tun_name) > 15 or "/" in self.tun_name or self.tun_name in (".", ".."):
            raise ValueError(f"bad interface name {self.tun_name!r}")
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"UDP port {self.listen_port} is out of range")
        if not 1280 <= self.mtu <= 65535:
            raise ValueError(f"MTU {self.mtu} is out of range (1280..65535)")
        if self.dns_mode not in DNS_MODES:
            raise ValueError(f"DNS mode {self.dns_mode!r} is not one of {', '.join(DNS_MODES)}")
        if self.endpoint_interval <= 0 or self.map_watchdog <= 0:
            raise ValueError("timer intervals must be positive")
