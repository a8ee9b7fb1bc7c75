"""Lab runner: the helper's MagicDNS lifecycle on a TUN, with the input firewall (as the serve engine wires it).

usage: run_guarded_dns.py SPEC_JSON
SPEC = {"tun": "tun0", "run_dir": "...", "firewall": true, "local": ["100.64.0.1/32"], "routes": [...],
        "self": {...}, "peers": [...], "dns": {...}}

Start: Forwarder.cleanup_leftovers() (a SIGKILLed earlier run), set_input(InputConfig(tun)), TUN
addresses with quad-100 (LinuxRouter), DNSServer on quad-100 UDP+TCP. SIGTERM: the reverse.
Prints "ready", then the resolver's counters whenever they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from engine.dns import Resolver, config_from_netmap
from engine.dns.server import DNSServer
from engine.router.inputfw import InputConfig
from engine.router.linux import LinuxRouter
from engine.router.nft import Forwarder
from engine.wgengine.reconfig import RouterConfig

QUAD100 = ("100.100.100.100/32", "fd7a:115c:a1e0::53/128")


async def main(spec: dict) -> None:
    fw = Forwarder(journal_dir=Path(spec["run_dir"]))
    print("leftovers", json.dumps(fw.cleanup_leftovers()), flush=True)
    if spec.get("firewall", True):
        fw.set_input(InputConfig(spec["tun"]))
    router = LinuxRouter(spec["tun"], service_addrs=QUAD100)
    router.up()
    router.set(RouterConfig(local_addrs=tuple(spec["local"]), routes=tuple(spec.get("routes", ()))))
    res = Resolver(config_from_netmap(spec["self"], spec["peers"], spec["dns"]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with DNSServer(res, [("100.100.100.100", 53), ("fd7a:115c:a1e0::53", 53)]):
            print("ready", flush=True)
            last = None
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
                now = json.dumps({"local": res.counters.local, "drops": res.counters.drops}, sort_keys=True)
                if now != last:
                    print("counters", now, flush=True)
                    last = now
    finally:
        fw.close()
        router.close()
        print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
