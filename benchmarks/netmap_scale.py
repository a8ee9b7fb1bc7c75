"""Benchmark: netmap scale — full map apply time, per-delta time and RSS for synthetic tailnets.

    .venv/bin/python benchmarks/netmap_scale.py [N ...]      (default: 1000 10000)

For each N: build a Headscale-shaped full MapResponse with N peers (JSON, zstd-framed as on
the wire), then measure (a) decode + apply + WgConfig + RouterConfig of the full map,
(b) per-delta costs (endpoint patch, online change, peer add, peer remove) including the
incremental WgConfig update and WireGuard diff, and (c) resident memory.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time

from engine.control.mapsession import MapSession
from engine.control.mapstream import MapFramer, frame_message, parse_map_response
from engine.tailcfg import MapResponse, PeerChange
from engine.wgengine.reconfig import diff_wg, router_config, wg_config

NOW = 1_800_000_000.0


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peer_json(i: int) -> dict:
    a, b = divmod(i, 250)
    return {
        "ID": i,
        "StableID": f"n{i}",
        "Name": f"host-{i}.mesh.test.",
        "User": 1,
        "Key": "nodekey:" + f"{i:064x}",
        "KeyExpiry": "0001-01-01T00:00:00Z",
        "Machine": "mkey:" + f"{i:064x}",
        "DiscoKey": "discokey:" + f"{i:064x}",
        "Addresses": [f"100.{64 + a // 250}.{a % 250}.{b + 1}/32", f"fd7a:115c:a1e0::{i:x}/128"],
        "AllowedIPs": [f"100.{64 + a // 250}.{a % 250}.{b + 1}/32", f"fd7a:115c:a1e0::{i:x}/128"],
        "Endpoints": [f"192.0.2.{i % 250 + 1}:41641", f"[2001:db8::{i:x}]:41641"],
        "HomeDERP": 999,
        "Hostinfo": {"Hostname": f"host-{i}", "OS": "linux"},
        "Created": "2026-01-01T00:00:00Z",
        "Cap": 130,
        "Online": True,
        "MachineAuthorized": True,
        "CapMap": {"https://tailscale.com/cap/is-admin": []},
    }


def full_map(n: int) -> bytes:
    doc = {
        "Node": peer_json(0),
        "Peers": [peer_json(i) for i in range(1, n + 1)],
        "DNSConfig": {"Domains": ["mesh.test"], "Proxied": True},
        "PacketFilters": {"base": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]},
        "UserProfiles": [{"ID": 1, "LoginName": "alice", "DisplayName": "Alice"}],
        "DERPMap": {
            "Regions": {
                "999": {
                    "RegionID": 999,
                    "RegionCode": "lab",
                    "Nodes": [{"Name": "999a", "RegionID": 999, "HostName": "192.0.2.1", "DERPPort": 8080}],
                }
            }
        },
    }
    return json.dumps(doc).encode()


def bench(n: int) -> dict:
    gc.collect()
    rss0 = rss_mib()
    raw = full_map(n)
    wire = frame_message(raw)
    t0 = time.perf_counter()
    (body,) = MapFramer().feed(wire)
    t1 = time.perf_counter()
    mr = parse_map_response(body)
    t2 = time.perf_counter()
    s = MapSession()
    nm = s.apply(mr, now=NOW)
    t3 = time.perf_counter()
    wg = wg_config(nm)
    rc = router_config(nm, wg)
    t4 = time.perf_counter()
    assert len(nm.peers) == n and len(wg.peers) == n and len(rc.routes) == 2 * n
    del raw, wire, body, mr
    gc.collect()
    rss1 = rss_mib()

    def delta(resp: MapResponse) -> float:
        nonlocal wg
        t = time.perf_counter()
        nm2 = s.apply(resp, now=NOW)
        new = wg_config(nm2, prev=wg)
        diff_wg(wg, new, hint=nm2.delta)
        wg = new
        return time.perf_counter() - t

    reps = 200
    patch = [
        delta(MapResponse(peers_changed_patch=(PeerChange(node_id=1 + k % n, endpoints=(f"198.51.100.{k % 250}:1",)),)))
        for k in range(reps)
    ]
    online = [delta(MapResponse(online_change={1 + k % n: bool(k % 2)})) for k in range(reps)]
    newnode = parse_map_response(json.dumps({"PeersChanged": [peer_json(n + 1)]}).encode()).peers_changed
    add = []
    remove = []
    for _ in range(reps // 4):
        add.append(delta(MapResponse(peers_changed=newnode)))
        remove.append(delta(MapResponse(peers_removed=(n + 1,))))
    # decode cost of one small delta message from the wire (JSON + zstd), for reference
    small = frame_message(json.dumps({"PeersChangedPatch": [{"NodeID": 1, "Endpoints": ["198.51.100.1:1"]}]}).encode())
    f = MapFramer()
    t = time.perf_counter()
    for _ in range(reps):
        parse_map_response(f.feed(small)[0])
    decode_small = (time.perf_counter() - t) / reps
    med = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    return {
        "peers": n,
        "wire_kib": round(len(frame_message(full_map(n))) / 1024, 1),
        "json_kib": round(len(full_map(n)) / 1024, 1),
        "zstd_ms": round((t1 - t0) * 1e3, 1),
        "decode_ms": round((t2 - t1) * 1e3, 1),
        "apply_ms": round((t3 - t2) * 1e3, 1),
        "reconfig_ms": round((t4 - t3) * 1e3, 1),
        "full_total_ms": round((t4 - t0) * 1e3, 1),
        "rss_delta_mib": round(rss1 - rss0, 1),
        "rss_per_peer_kib": round((rss1 - rss0) * 1024 / n, 2),
        "delta_patch_ms": round(med(patch), 3),
        "delta_online_ms": round(med(online), 3),
        "delta_add_ms": round(med(add), 3),
        "delta_remove_ms": round(med(remove), 3),
        "decode_small_delta_ms": round(decode_small * 1e3, 3),
    }


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000, 10000]
    print(f"python {sys.version.split()[0]}; baseline RSS {rss_mib():.1f} MiB")
    for n in sizes:
        print(json.dumps(bench(n)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
