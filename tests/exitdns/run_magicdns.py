"""Lab runner: serve MagicDNS (engine.dns.server) for a netmap given as JSON until killed.

usage: run_magicdns.py '{"self": {...}, "peers": [...], "dns": {...}, "listen": [["100.100.100.100", 53]]}'
"""

from __future__ import annotations

import asyncio
import json
import sys

from engine.dns import Resolver, config_from_netmap
from engine.dns.server import DNSServer


async def main(spec: dict) -> None:
    cfg = config_from_netmap(spec["self"], spec["peers"], spec["dns"], os_upstreams=spec.get("os_upstreams", ()))
    res = Resolver(cfg)
    async with DNSServer(res, [tuple(a) for a in spec["listen"]]) as srv:
        print("ready", srv.bound, flush=True)
        while True:
            await asyncio.sleep(0.5)
            print("counters", res.counters, flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
