"""Attack tools for lab tests (run inside a lab host): a raw UDP flood and a malicious tailnet peer.

disco_attacker.py flood --to IP:PORT --seconds S --peer-disco HEX
    sends disco junk (random keys), disco junk under a real peer's disco key, STUN-looking
    responses and WireGuard-looking junk, round robin from 8 source ports; prints
    {"sent": {kind: n}} when done.
disco_attacker.py peer --derp-map PATH
    a MagicConn driven by JSON lines on stdin (tests/lab/agent.py, like node_agent.py); first line
    {"ready":true,"node":hex,"disco":hex}. Commands:
      {"cmd":"home","region":n}                      dial the DERP region, wait until connected
      {"cmd":"peers","peers":[{node,disco,derp}]}
      {"cmd":"cmm","to":hex,"disco":hex,"ip":ip,"first_port":p,"n":k,"count":c}
          send c CallMeMaybes via DERP, each listing k endpoints ip:first_port.. (fresh ports each time)
      {"cmd":"quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time

import nacl.public

from engine.disco import box as dbox
from engine.disco.message import CallMeMaybe
from engine.magicsock.conn import MagicConn, PeerConfig
from tests.lab.agent import serve
from tests.lab.netlab import apoll_until


def flood(args) -> None:
    ip, port = args.to.rsplit(":", 1)
    dst = (ip, int(port))
    peer_disco = bytes.fromhex(args.peer_disco)
    kinds = {
        "disco_random_key": lambda: dbox.MAGIC + os.urandom(32) + os.urandom(24) + os.urandom(40),
        "disco_peer_key": lambda: dbox.MAGIC + peer_disco + os.urandom(24) + os.urandom(40),
        "stun": lambda: b"\x01\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12),
        "wireguard": lambda: b"\x04\x00\x00\x00" + os.urandom(60),
    }
    pools = {k: [f() for _ in range(32)] for k, f in kinds.items()}
    socks = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        s.setblocking(False)
        socks.append(s)
    sent = {k: 0 for k in kinds}
    names = list(kinds)
    end = time.monotonic() + args.seconds
    i = 0
    while time.monotonic() < end:
        for _ in range(256):
            k = names[i % 4]
            try:
                socks[i % 8].sendto(pools[k][i % 32], dst)
                sent[k] += 1
            except (BlockingIOError, OSError):
                pass
            i += 1
    print(json.dumps({"sent": sent}), flush=True)


async def peer(args) -> None:
    derp_map = json.load(open(args.derp_map))
    async with MagicConn(nacl.public.PrivateKey.generate(), derp_map=derp_map, use_derp_http=True) as ms:
        port_seq = 0

        async def home(req: dict) -> dict:
            rid = int(req["region"])
            ms.set_home_derp(rid)
            await apoll_until(lambda: (st := ms.derp_status().get(rid)) is not None and st.connected, 10.0)
            await asyncio.sleep(0.3)
            return {"connected": ms.derp_status()[rid].connected}

        def peers(req: dict) -> None:
            ms.set_peers(
                [
                    PeerConfig.make(bytes.fromhex(p["node"]), bytes.fromhex(p["disco"]), p.get("derp", 0))
                    for p in req["peers"]
                ]
            )

        async def cmm(req: dict) -> dict:
            nonlocal port_seq
            to, disco = bytes.fromhex(req["to"]), bytes.fromhex(req["disco"])
            sent = 0
            for _ in range(int(req["count"])):
                eps = []
                for _ in range(int(req["n"])):
                    eps.append((req["ip"], int(req["first_port"]) + port_seq % 30000))
                    port_seq += 1
                pkt = ms._disco.seal(disco, CallMeMaybe(endpoints=tuple(eps)))
                before = ms.counters.derp_tx
                ms._derp_send(ms.home_derp, to, pkt)
                sent += ms.counters.derp_tx - before
                await asyncio.sleep(0.01)
            return {"sent": sent, "endpoints_each": int(req["n"])}

        await serve(
            {"ready": True, "node": ms.node_public.hex(), "disco": ms.disco_public.hex()},
            {"home": home, "peers": peers, "cmm": cmm},
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--to", required=True)
    f.add_argument("--seconds", type=float, default=3.0)
    f.add_argument("--peer-disco", required=True)
    p = sub.add_parser("peer")
    p.add_argument("--derp-map", required=True)
    args = ap.parse_args()
    if args.mode == "flood":
        flood(args)
    else:
        asyncio.run(peer(args))


if __name__ == "__main__":
    main()
