"""Offering an exit node / subnet routes on Linux: nftables table `meshvpn` (forward + masquerade) and ip_forward sysctls.

    table inet meshvpn
      chain forward      (filter hook forward)
        iifname <tun>  -> mark |= 0x40000 (within 0xff0000)
        mark 0x40000/0xff0000 -> accept
        oifname <tun>, saddr 100.64.0.0/10 -> drop  (CGNAT sources arriving from elsewhere are spoofed)
        oifname <tun>  -> accept
      chain postrouting  (nat hook postrouting, srcnat)
        mark 0x40000/0xff0000, oifname != <tun> (or == wan) -> masquerade

The ruleset is replaced atomically (`nft -f`), so set() is idempotent. Previous sysctl values
are journaled and restored by set(None) or, after a crash, by cleanup_leftovers().
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.router.exitnode import MARK_MASK, SUBNET_ROUTE_MARK, JournaledApplier

NFT_TABLE = "meshvpn"
NFT_FAMILY = "inet"
JOURNAL_NAME = "nft.json"
SYSCTL_V4 = "net.ipv4.ip_forward"
SYSCTL_V6 = "net.ipv6.conf.all.forwarding"
CGNAT = "100.64.0.0/10"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """Forward packets from the TUN (exit node / subnet router) and NAT them on the way out."""

    tun: str
    wan: str | None = None  # masquerade only out of this interface; None = any interface but the TUN
    snat: bool = True  # tailscale --snat-subnet-routes (default on)
    ipv6: bool = True


def _q(name: str) -> str:
    if not name or any(c in name for c in '"\\\n ;{}'):
        raise ValueError(f"bad interface name {name!r}")
    return f'"{name}"'


def ruleset(cfg: ForwardConfig) -> str:
    """The nft script for `cfg` (pure). Re-creates the table atomically."""
    mark, mask = f"{SUBNET_ROUTE_MARK:#010x}", f"{MARK_MASK:#010x}"
    keep = f"{0xFFFFFFFF ^ MARK_MASK:#010x}"
    tun = _q(cfg.tun)
    out_sel = f"oifname {_q(cfg.wan)}" if cfg.wan else f"oifname != {tun}"
    lines = [
        f"add table {NFT_FAMILY} {NFT_TABLE}",
        f"delete table {NFT_FAMILY} {NFT_TABLE}",
        f"table {NFT_FAMILY} {NFT_TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {tun} meta mark set meta mark & {keep} | {mark}",
        f"    meta mark & {mask} == {mark} accept",
        f"    oifname {tun} ip saddr {CGNAT} drop",
        f"    oifname {tun} accept",
        "  }",
    ]
    if cfg.snat:
        lines += [
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f"    {out_sel} meta mark & {mask} == {mark} masquerade",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class Forwarder(JournaledApplier):
    """Applies ForwardConfig (nft table + sysctls); set(None) undoes it; journaled for crash recovery."""

    journal_name = JOURNAL_NAME
    logger_name = "meshvpn.router.nft"
    _current: ForwardConfig | None = None  # set per instance by set()

    def _sysctl_get(self, key: str) -> str | None:
        out = self._run(["sysctl", "-n", key], check=False).strip()
        return out or None

    def _sysctl_set(self, key: str, value: str) -> None:
        self._run(["sysctl", "-qw", f"{key}={value}"])

    def table_present(self) -> bool:
        return bool(self._run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).strip())

    def set(self, cfg: ForwardConfig | None) -> None:
        """Make the OS match `cfg` (None = stop forwarding: table removed, sysctls restored)."""
        with self._lock:
            self._set(cfg)

    def reassert(self) -> list[str]:
        """Re-install the table / ip_forward another program removed (`nft flush ruleset`); returns what was missing."""
        with self._lock:
            cfg = self._current
            if cfg is None:
                return []
            missing = [] if self.table_present() else [f"nft table {NFT_FAMILY} {NFT_TABLE}"]
            if self._sysctl_get(SYSCTL_V4) != "1":
                missing.append(f"{SYSCTL_V4}=1")
            if missing:
                self._log.warning("forwarding was changed by another program (missing: %s); re-installing",
                                  "; ".join(missing))
                self._set(cfg)
            return missing

    def _set(self, cfg: ForwardConfig | None) -> None:
        if cfg is None:
            self._undo(self._journal.read())
            self._current = None
            return
        journal = self._journal.read()
        if journal is None:
            # First time: remember what to restore before touching anything.
            journal = {"sysctl": {k: self._sysctl_get(k) for k in (SYSCTL_V4, SYSCTL_V6)}}
            self._journal.write(journal)
        self._run(["nft", "-f", "-"], input=ruleset(cfg))
        self._sysctl_set(SYSCTL_V4, "1")
        if cfg.ipv6 and journal["sysctl"].get(SYSCTL_V6) is not None:
            self._sysctl_set(SYSCTL_V6, "1")
        self._current = cfg
        self._log.info("forwarding on from %s (snat=%s)", cfg.tun, cfg.snat)

    def _undo(self, journal: dict | None) -> list[str]:
        done: list[str] = []
        if self.table_present():
            self._run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE], check=False)
            done.append(f"nft table {NFT_FAMILY} {NFT_TABLE}")
        if journal is not None:
            for key, old in (journal.get("sysctl") or {}).items():
                if old is not None and self._sysctl_get(key) != old:
                    self._sysctl_set(key, old)
                    done.append(f"{key}={old}")
        self._journal.remove()
        return done

    def cleanup_leftovers(self) -> list[str]:
        """At start: delete a leftover `meshvpn` table and restore journaled sysctls; returns what was done."""
        done = self._undo(self._journal.read())
        if done:
            self._log.warning("removed forwarding leftovers of a previous run: %s", "; ".join(done))
        return done
