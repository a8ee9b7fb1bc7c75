"""A full meshvpn node for interop tests: ControlClient + MagicConn + WireGuard Device on a TUN.

    python tests/nat/tailnet_agent.py --login-server URL --auth-key file:PATH --hostname H --tun NAME

Prints JSON lines: {"ready":...} once a netmap is applied; reads "status" / "quit" on stdin.
This is a test harness built from the engine's parts; the product's node is `mesh-helper serve` (engine/service.py).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.control.client import ControlClient, ControlOptions, NetMapUpdated  # noqa: E402
from engine.dataplane.device import Device  # noqa: E402
from engine.dataplane.tun_linux import LinuxTun  # noqa: E402
from engine.fs.authkey import resolve as resolve_auth_key  # noqa: E402
from engine.magicsock.bind import PeerEndpoint  # noqa: E402
from engine.magicsock.conn import MagicConn, PeerConfig  # noqa: E402
from engine.tailcfg import Hostinfo, NetInfo, encode  # noqa: E402
from engine.types.keys import DiscoPrivate, DiscoPublic, MachinePrivate, NodePrivate  # noqa: E402
from engine.wgengine.reconfig import wg_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--login-server", required=True)
    ap.add_argument("--auth-key", required=True)
    ap.add_argument("--hostname", default="meshvpn")
    ap.add_argument("--tun", required=True)
    asyncio.run(run(ap.parse_args()))


async def run(args) -> None:
    node = NodePrivate.generate()
    disco = DiscoPrivate.generate()
    out = sys.stdout
    applied: dict = {"peers": {}, "addrs": set(), "routes": set(), "derp": None, "netchecked": False}
    netmaps: asyncio.Queue = asyncio.Queue()

    async with MagicConn(node, disco_private=disco, use_derp_http=True) as ms:
        tun = LinuxTun.create(args.tun, mtu=1280)
        dev = Device(args.tun, mtu=1280, tun=tun, bind=ms.bind)
        dev.set_private_key(node.raw)
        dev.up()
        hostinfo = Hostinfo(
            hostname=args.hostname,
            os="linux",
            ipn_version="meshvpn-test",
            backend_log_id=uuid.uuid4().hex,
            net_info=NetInfo(preferred_derp=0),
        )
        eps = ms.endpoints()
        cc = ControlClient(
            ControlOptions(
                server_url=args.login_server,
                machine_key=MachinePrivate.generate(),
                node_key=node,
                disco_public=DiscoPublic(ms.disco_public),
                hostinfo=hostinfo,
                auth_key=resolve_auth_key(args.auth_key),
                endpoints=tuple(e.addr for e in eps),
                endpoint_types=tuple(e.type for e in eps),
            ),
            on_event=lambda ev: netmaps.put_nowait(ev.netmap) if isinstance(ev, NetMapUpdated) else None,
        )
        ms.on_endpoints_changed = lambda e: cc.set_endpoints([x.addr for x in e], [x.type for x in e])

        async def apply(nm) -> None:
            if nm.derp_map is not None:
                dm = encode(nm.derp_map)
                if dm != applied["derp"]:
                    applied["derp"] = dm
                    ms.set_derp_map(dm)
            if not applied["netchecked"] and ms.derp_map.regions:
                applied["netchecked"] = True
                await ms.netcheck()
                cc.set_preferred_derp(ms.home_derp)
            if nm.self_node is not None:
                for a in nm.self_node.addresses:
                    if ":" not in a and a not in applied["addrs"]:
                        subprocess.run(["ip", "addr", "add", a, "dev", args.tun], check=False)
                        applied["addrs"].add(a)
            wg = wg_config(nm)
            ms.set_peers(
                [
                    PeerConfig.make(p.public_key, p.disco_key, p.home_derp, p.endpoints)
                    for p in wg.peers.values()
                    if p.disco_key is not None
                ]
            )
            for p in wg.peers.values():
                dev.upsert_peer(
                    p.public_key.raw,
                    endpoint=PeerEndpoint(p.public_key.raw),
                    allowed_ips=p.allowed_ips,
                    replace_allowed_ips=True,
                )
                for cidr in p.allowed_ips:
                    if ":" not in cidr and cidr not in applied["routes"]:
                        subprocess.run(["ip", "route", "replace", cidr, "dev", args.tun], check=False)
                        applied["routes"].add(cidr)
            applied["peers"] = {p.public_key.raw.hex(): str(p.public_key) for p in wg.peers.values()}
            out.write(
                json.dumps(
                    {
                        "netmap": True,
                        "self": list(nm.self_node.addresses) if nm.self_node else [],
                        "peers": list(applied["peers"]),
                    }
                )
                + "\n"
            )
            out.flush()

        async def commands() -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while True:
                line = await reader.readline()
                cmd = line.decode().strip()
                if not line or cmd == "quit":
                    raise asyncio.CancelledError
                if cmd == "status":
                    st = {
                        "paths": {k.hex(): dataclasses.asdict(v) for k, v in ms.peer_status().items()},
                        "endpoints": [e.addr for e in ms.endpoints()],
                        "home_derp": ms.home_derp,
                        "net_info": ms.net_info(),
                        "wg": [
                            {
                                "public_key": x.public_key.hex(),
                                "last_handshake": x.last_handshake,
                                "rx_bytes": x.rx_bytes,
                                "tx_bytes": x.tx_bytes,
                            }
                            for x in dev.peers()
                        ],
                        "derp": {str(k): dataclasses.asdict(v) for k, v in ms.derp_status().items()},
                        "counters": dataclasses.asdict(ms.counters),
                    }
                    out.write(json.dumps({"status": st}) + "\n")
                    out.flush()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(cc.run())
                tg.create_task(commands())
                while True:
                    await apply(await netmaps.get())
        except* asyncio.CancelledError:
            pass
        finally:
            await asyncio.to_thread(dev.close)


if __name__ == "__main__":
    main()
