"""A magicsock node driven over stdin/stdout JSON lines, for lab tests (runs inside a lab host).

Commands (one JSON object per line) -> one JSON reply line each:
  {"cmd":"netcheck"}                         -> {"report":..., "endpoints":[...], "net_info":...}
  {"cmd":"peers","peers":[{node,disco,derp,endpoints}]}
  {"cmd":"pump","to":hex,"interval":0.1}     start sending a datagram to `to` every interval
  {"cmd":"stop_pump"}
  {"cmd":"status"}                           -> {"peers":{hex: PathStatus}, "rx":{hex: n}, "derp":{...}}
  {"cmd":"quit"}
The first line printed is {"ready":true, "node":hex, "disco":hex, "port":n}.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import threading
import time

import nacl.public

from engine.magicsock.bind import PeerEndpoint
from engine.magicsock.conn import MagicConn, PeerConfig
from tests.lab.agent import serve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--derp-map", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--wg", default="", help="TUN name: run a WireGuard Device over magicsock")
    ap.add_argument("--wg-addr", default="", help="tunnel address CIDR, e.g. 100.64.0.1/32")
    args = ap.parse_args()
    asyncio.run(run(args))


async def run(args) -> None:
    derp_map = json.load(open(args.derp_map))
    key = nacl.public.PrivateKey.generate()
    rx: dict[str, int] = {}
    first_rx: dict[str, float] = {}
    t0 = time.monotonic()
    async with MagicConn(key, derp_map=derp_map, use_derp_http=True, port=args.port) as ms:

        def drain():
            buf = bytearray(65536)
            while True:
                n, _s, ep = ms.bind.recv_into(buf)
                if ep is None:
                    return
                k = ep.node_key.hex() if isinstance(ep, PeerEndpoint) else str(ep)
                rx[k] = rx.get(k, 0) + 1
                first_rx.setdefault(k, time.monotonic() - t0)

        dev = None
        if args.wg:
            from engine.dataplane.device import Device
            from engine.dataplane.tun_linux import LinuxTun

            tun = LinuxTun.create(args.wg, mtu=1280, addresses=[args.wg_addr] if args.wg_addr else ())
            dev = Device(args.wg, mtu=1280, tun=tun, bind=ms.bind)
            dev.set_private_key(bytes(key))
            dev.up()
        else:
            threading.Thread(target=drain, daemon=True).start()
        pump_task: asyncio.Task | None = None
        seq = 0

        async def pump(to: bytes, interval: float):
            nonlocal seq
            ep = PeerEndpoint(to)
            while True:
                seq += 1
                # looks like a WireGuard transport message (type 4) so nothing demuxes it as disco/STUN
                ms.bind.send([b"\x04\x00\x00\x00" + seq.to_bytes(8, "little") + b"x" * 100], ep)
                await asyncio.sleep(interval)

        async def netcheck(req: dict) -> dict:
            rep = await ms.netcheck()
            return {"report": rep.to_json(), "endpoints": [e.addr for e in ms.endpoints()], "net_info": ms.net_info()}

        def peers(req: dict) -> None:
            ms.set_peers(
                [
                    PeerConfig.make(
                        bytes.fromhex(p["node"]), bytes.fromhex(p["disco"]), p.get("derp", 0), p.get("endpoints", ())
                    )
                    for p in req["peers"]
                ]
            )
            if dev is not None:
                for p in req["peers"]:
                    nk = bytes.fromhex(p["node"])
                    dev.upsert_peer(nk, endpoint=PeerEndpoint(nk), allowed_ips=p.get("allowed_ips", []))

        def start_pump(req: dict) -> None:
            nonlocal pump_task
            stop_pump(req)
            pump_task = tg.create_task(pump(bytes.fromhex(req["to"]), float(req.get("interval", 0.1))))

        def stop_pump(req: dict) -> None:
            nonlocal pump_task
            if pump_task is not None:
                pump_task.cancel()
                pump_task = None

        def status(req: dict) -> dict:
            reply = {
                "peers": {k.hex(): dataclasses.asdict(v) for k, v in ms.peer_status().items()},
                "rx": dict(rx),
                "first_rx": dict(first_rx),
                "t": time.monotonic() - t0,
                "derp": {str(k): dataclasses.asdict(v) for k, v in ms.derp_status().items()},
                "counters": dataclasses.asdict(ms.counters),
                "home_derp": ms.home_derp,
            }
            if dev is not None:
                reply["wg"] = {
                    "peers": [
                        {
                            "public_key": x.public_key.hex(),
                            "endpoint": str(x.endpoint),
                            "last_handshake": x.last_handshake,
                            "rx_bytes": x.rx_bytes,
                            "tx_bytes": x.tx_bytes,
                        }
                        for x in dev.peers()
                    ],
                    "counters": dev.counters(),
                }
            return reply

        hello = {"ready": True, "node": ms.node_public.hex(), "disco": ms.disco_public.hex(), "port": ms.port}
        async with asyncio.TaskGroup() as tg:
            await serve(
                hello,
                {"netcheck": netcheck, "peers": peers, "pump": start_pump, "stop_pump": stop_pump, "status": status},
            )
            stop_pump({})
        if dev is not None:
            await asyncio.to_thread(dev.close)


if __name__ == "__main__":
    main()
