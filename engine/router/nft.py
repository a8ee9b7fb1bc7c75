"""The helper's one nftables table `inet meshvpn`: input guard (inputfw.py) + forwarding/masquerade, and ip_forward.

    table inet meshvpn
      chain input        (filter hook input)  while the node runs: see inputfw.py
      chain forward      (filter hook forward)              offering an exit node / subnet routes:
        iifname <tun>  -> mark |= 0x40000 (within 0xff0000)
        mark 0x40000/0xff0000 -> accept
        oifname <tun>, saddr 100.64.0.0/10 -> drop  (CGNAT sources arriving from elsewhere are spoofed)
        oifname <tun>  -> accept
      chain postrouting  (nat hook postrouting, srcnat)
        mark 0x40000/0xff0000, oifname != <tun> (or == wan) -> masquerade

The ruleset is replaced atomically (`nft -f`), so set()/set_input() are idempotent; the table goes
when neither part is wanted. The helper's journal of OS changes (engine/recovery/journal.py) records
the table (`Change.nft_table`) before it exists and each forwarding sysctl's previous value
(`Change.sysctl`) before it is changed; they are forgotten once removed/restored. set(None) restores
the sysctls, close() deletes the table, and after a crash the journal's recovery (and
cleanup_leftovers(), which also deletes a table no journal names) undoes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.net.tsaddr import CGNAT_V4_TEXT
from engine.recovery.journal import Change
from engine.router.exitnode import MARK_MASK, SUBNET_ROUTE_MARK, JournaledApplier
from engine.router.inputfw import InputConfig, input_chain, quote_ifname

NFT_TABLE = "meshvpn"
NFT_FAMILY = "inet"
SYSCTL_V4 = "net.ipv4.ip_forward"
SYSCTL_V6 = "net.ipv6.conf.all.forwarding"
CGNAT = CGNAT_V4_TEXT


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """Forward packets from the TUN (exit node / subnet router) and NAT them on the way out."""

    tun: str
    wan: str | None = None  # masquerade only out of this interface; None = any interface but the TUN
    snat: bool = True  # tailscale --snat-subnet-routes (default on)
    ipv6: bool = True


_q = quote_ifname


def ruleset(cfg: ForwardConfig | None, inp: InputConfig | None = None) -> str:
    """The nft script for forwarding `cfg` and input guard `inp` (pure). Re-creates the table atomically."""
    lines = [
        f"add table {NFT_FAMILY} {NFT_TABLE}",
        f"delete table {NFT_FAMILY} {NFT_TABLE}",
        f"table {NFT_FAMILY} {NFT_TABLE} {{",
    ]
    if inp is not None:
        lines += input_chain(inp)
    if cfg is not None:
        lines += _forward_chains(cfg)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _forward_chains(cfg: ForwardConfig) -> list[str]:
    mark, mask = f"{SUBNET_ROUTE_MARK:#010x}", f"{MARK_MASK:#010x}"
    keep = f"{0xFFFFFFFF ^ MARK_MASK:#010x}"
    tun = _q(cfg.tun)
    out_sel = f"oifname {_q(cfg.wan)}" if cfg.wan else f"oifname != {tun}"
    lines = [
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
    return lines


class Forwarder(JournaledApplier):
    """Owns table `inet meshvpn`: set(ForwardConfig | None) forwarding + sysctls, set_input(InputConfig | None)
    the input guard; close() removes both. Journaled for crash recovery."""

    logger_name = "meshvpn.router.nft"
    _current: ForwardConfig | None = None  # set per instance by set()
    _input: InputConfig | None = None  # set per instance by set_input()

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._table_cid: int | None = None  # journal record of the table
        self._saved: dict[str, tuple[str, int]] = {}  # sysctl -> (value before us, journal record)

    def _sysctl_get(self, key: str) -> str | None:
        out = self._run(["sysctl", "-n", key], check=False).strip()
        return out or None

    def _sysctl_set(self, key: str, value: str) -> None:
        self._run(["sysctl", "-qw", f"{key}={value}"])

    def table_present(self) -> bool:
        return bool(self._run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False).strip())

    def set(self, cfg: ForwardConfig | None) -> None:
        """Make the OS match `cfg` (None = stop forwarding: its chains removed, sysctls restored)."""
        with self._lock:
            self._apply(cfg, self._input)

    def set_input(self, cfg: InputConfig | None) -> None:
        """Install (or with None remove) the input guard for the TUN `cfg.tun`."""
        with self._lock:
            self._apply(self._current, cfg)

    def close(self) -> None:
        """Remove the whole table and restore the sysctls (the helper stops)."""
        with self._lock:
            self._apply(None, None)

    def reassert(self) -> list[str]:
        """Re-install the table / ip_forward another program removed (`nft flush ruleset`); returns what was missing."""
        with self._lock:
            cfg, inp = self._current, self._input
            if cfg is None and inp is None:
                return []
            missing = [] if self.table_present() else [f"nft table {NFT_FAMILY} {NFT_TABLE}"]
            if cfg is not None and self._sysctl_get(SYSCTL_V4) != "1":
                missing.append(f"{SYSCTL_V4}=1")
            if missing:
                self._log.warning(
                    "firewall/forwarding was changed by another program (missing: %s); re-installing",
                    "; ".join(missing),
                )
                self._apply(cfg, inp)
            return missing

    def _apply(self, cfg: ForwardConfig | None, inp: InputConfig | None) -> None:
        if cfg is None and inp is None:
            if self._undo():
                self._log.info("nft table %s %s removed, sysctls restored", NFT_FAMILY, NFT_TABLE)
            self._current = self._input = None
            return
        if self._table_cid is None:  # the table is on disk only after its journal record
            self._table_cid = self._journal.record(Change.nft_table(NFT_FAMILY, NFT_TABLE))
        if cfg is not None and not self._saved:
            # First time forwarding: remember what to restore before touching anything.
            for key in (SYSCTL_V4, SYSCTL_V6):
                old = self._sysctl_get(key)
                if old is not None and old.isdigit() and len(old) == 1:
                    self._saved[key] = (old, self._journal.record(Change.sysctl(key, old)))
        self._run(["nft", "-f", "-"], input=ruleset(cfg, inp))
        if cfg is not None:
            self._sysctl_set(SYSCTL_V4, "1")
            if cfg.ipv6 and SYSCTL_V6 in self._saved:
                self._sysctl_set(SYSCTL_V6, "1")
        else:
            self._restore_sysctls()
        if cfg != self._current:
            self._log.info("forwarding %s", f"on from {cfg.tun} (snat={cfg.snat})" if cfg else "off")
        if inp != self._input:
            self._log.info("input guard %s", f"on for {inp.tun}" if inp else "off")
        self._current, self._input = cfg, inp

    def _restore_sysctls(self) -> list[str]:
        done = []
        for key, (old, cid) in list(self._saved.items()):
            if self._sysctl_get(key) != old:
                self._sysctl_set(key, old)
                done.append(f"{key}={old}")
            del self._saved[key]
            self._journal.forget(cid)
        return done

    def _undo(self) -> list[str]:
        done: list[str] = []
        if self.table_present():
            self._run(["nft", "delete", "table", NFT_FAMILY, NFT_TABLE], check=False)
            done.append(f"nft table {NFT_FAMILY} {NFT_TABLE}")
        if self._table_cid is not None:
            self._journal.forget(self._table_cid)
            self._table_cid = None
        return done + self._restore_sysctls()

    def cleanup_leftovers(self) -> list[str]:
        """At start: undo the journaled table and sysctls of a previous run, and delete a `meshvpn` table
        no journal names; returns what was done."""
        rep = self._journal.recover(select=lambda ch: ch.kind in ("nft-table", "sysctl"))
        done: list[str] = []
        for ch, msg in zip(rep.changes, rep.undone):
            if ch.kind == "sysctl":
                done.append(f"{ch.args['key']}={ch.args['original']}")
            elif not msg.startswith("already gone"):
                done.append(f"nft table {ch.args['family']} {ch.args['name']}")
        self._table_cid, self._saved = None, {}
        done += self._undo()
        self._current = self._input = None
        if done:
            self._log.warning("removed firewall/forwarding leftovers of a previous run: %s", "; ".join(done))
        return done
