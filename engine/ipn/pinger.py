"""Pings of a peer for the LocalAPI: a disco ping over magicsock, or one ICMP echo through the tunnel."""

from __future__ import annotations

import asyncio
import re

from engine.ipn.engine_api import PeerView, PingOutcome
from engine.types.keys import NodePublic
from engine.wgengine.userspace import UserspaceEngine

PING_WAIT = 3.0  # seconds one ICMP echo / disco ping may take
_RTT_RE = re.compile(r"= [\d.]+/([\d.]+)/")  # iputils summary: rtt min/avg/max/mdev = a/b/c/d ms


class PingFailed(Exception):
    """The echo got no answer (or ping could not run); the message says which."""


async def icmp_rtt(ip: str) -> float:
    """Round-trip time in seconds of one ICMP echo to ``ip`` (iputils ping); PingFailed otherwise."""
    argv = ["ping", "-n", "-q", "-c", "1", "-W", str(int(PING_WAIT)), ip]
    if ":" in ip:
        argv.insert(1, "-6")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(PING_WAIT + 2):
            out, _ = await proc.communicate()
    except (OSError, asyncio.TimeoutError) as e:
        raise PingFailed(f"ping failed: {e}") from None
    m = _RTT_RE.search(out.decode(errors="replace"))
    if proc.returncode != 0 or m is None:
        raise PingFailed("timeout")
    return float(m.group(1)) / 1000.0


async def disco_ping(engine: UserspaceEngine, peer: PeerView, ip: str, name: str) -> PingOutcome:
    """`tailscale ping` over magicsock: answered via DERP(region) until a direct path answers."""
    try:
        r = await engine.disco_ping(NodePublic.from_text(peer.node_key).raw, PING_WAIT)
    except KeyError:
        return PingOutcome(node_ip=ip, node_name=name, err="peer has no disco key")
    except asyncio.TimeoutError:
        return PingOutcome(node_ip=ip, node_name=name, err="timeout")
    return PingOutcome(
        node_ip=ip,
        node_name=name,
        latency_seconds=r.latency,
        endpoint=r.endpoint,
        derp_region_id=r.derp_region,
        derp_region_code=r.derp_code,
    )
