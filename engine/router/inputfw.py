"""Input firewall of the helper's nft table: quad-100 only via lo / the TUN, tailnet sources only via the TUN.

tailscale (util/linuxfw, chain ts-input) installs, for IPv4:

    -i lo -s <own tailscale ip> -j ACCEPT        (AddLoopbackRule, one per own address)
    ! -i <tun> -s 100.115.92.0/23 -j RETURN      (ChromeOS VM range)
    ! -i <tun> -s 100.64.0.0/10 -j DROP
    -i <tun> -j ACCEPT

Its quad-100 lives inside netstack, unreachable from the LAN; ours is a kernel address on the
TUN, which (weak host model) a LAN neighbour routing 100.100.100.100 via us would reach. So,
in `chain input` of table `inet meshvpn` (see nft.py):

    ip  daddr 100.100.100.100     iifname != { "lo", <tun> } counter drop
    ip6 daddr fd7a:115c:a1e0::53  iifname != { "lo", <tun> } counter drop
    iifname "lo" fib saddr type local accept      our own addresses, whatever the netmap assigns
    iifname != <tun> ip  saddr 100.64.0.0/10       counter drop
    iifname != <tun> ip6 saddr fd7a:115c:a1e0::/48 counter drop   (tailscale's TODO for IPv6)
    iifname <tun> accept

The ChromeOS carve-out is left out on purpose: it would let a LAN neighbour use those sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.net.tsaddr import CGNAT_V4_TEXT, QUAD100_V4, QUAD100_V6, TAILNET_V6_TEXT

CGNAT_V4 = CGNAT_V4_TEXT
TAILNET_V6 = TAILNET_V6_TEXT


@dataclass(frozen=True, slots=True)
class InputConfig:
    """Guard the host's tailnet-only listeners: packets for them must arrive on `tun` (or lo)."""

    tun: str
    ipv6: bool = True


def quote_ifname(name: str) -> str:
    """An interface name as an nft string literal; ValueError for anything that could break out of it."""
    if not name or len(name) > 15 or any(c in name for c in '"\\\n\r\t ;{}#/') or not name.isprintable():
        raise ValueError(f"bad interface name {name!r}")
    return f'"{name}"'


def input_chain(cfg: InputConfig) -> list[str]:
    """The `chain input { ... }` lines for `cfg` (pure)."""
    tun = quote_ifname(cfg.tun)
    lines = [
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    ip daddr {QUAD100_V4} iifname != {{ "lo", {tun} }} counter drop',
    ]
    if cfg.ipv6:
        lines.append(f'    ip6 daddr {QUAD100_V6} iifname != {{ "lo", {tun} }} counter drop')
    lines += [
        '    iifname "lo" fib saddr type local accept',
        f"    iifname != {tun} ip saddr {CGNAT_V4} counter drop",
    ]
    if cfg.ipv6:
        lines.append(f"    iifname != {tun} ip6 saddr {TAILNET_V6} counter drop")
    lines += [f"    iifname {tun} accept", "  }"]
    return lines
