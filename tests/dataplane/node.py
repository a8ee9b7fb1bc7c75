"""Run one Device in the current network namespace (lab tests and benchmarks start it with netlab).

    python tests/dataplane/node.py CONFIG.json

CONFIG: {"name", "mtu", "private_key" (hex), "listen_port", "addresses": [cidr...],
         "peers": [{"public_key" (hex), "endpoint", "allowed_ips": [...], "keepalive"}],
         "timings": {field: value} (optional), "tso": bool, "gso": bool, "gro": bool}
Prints ``READY <port>`` when up; then reads commands on stdin: ``status`` prints one JSON line
(peers + counters), ``quit`` (or EOF / SIGTERM) closes the device and removes the TUN.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.dataplane.bind import UdpBind  # noqa: E402
from engine.dataplane.device import Device  # noqa: E402
from engine.dataplane.tun_linux import LinuxTun  # noqa: E402
from engine.wg.constants import Timings  # noqa: E402


def _profile_workers(dev: Device, pattern: str) -> None:
    """Run every worker thread under its own cProfile; dump to pattern % thread name at exit."""
    import cProfile

    orig = dev._guard

    def guard(fn):
        prof = cProfile.Profile()
        try:
            prof.runcall(orig, fn)
        finally:
            prof.dump_stats(pattern % threading.current_thread().name)

    dev._guard = guard  # type: ignore[method-assign]


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=os.environ.get("MESH_LOG", "WARNING"), stream=sys.stderr)
    timings = Timings(**cfg.get("timings", {}))
    mtu = cfg.get("mtu", 1420)
    tun = LinuxTun.create(
        cfg["name"],
        mtu=mtu,
        offload=cfg.get("offload", True),
        tso=cfg.get("tso", False),
        addresses=cfg.get("addresses", ()),
    )
    bind = UdpBind(gso=cfg.get("gso", True), gro=cfg.get("gro", True))
    dev = Device(cfg["name"], mtu=mtu, tun=tun, bind=bind, timings=timings)
    if cfg.get("profile"):
        _profile_workers(dev, cfg["profile"])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        dev.set_private_key(bytes.fromhex(cfg["private_key"]))
        dev.set_listen_port(cfg.get("listen_port", 0))
        for p in cfg.get("peers", []):
            dev.upsert_peer(
                bytes.fromhex(p["public_key"]),
                endpoint=p.get("endpoint"),
                allowed_ips=p.get("allowed_ips", []),
                persistent_keepalive=p.get("keepalive", 0),
            )
        dev.up()
        for r in cfg.get("routes", []):
            subprocess.run(["ip", "route", "replace", r, "dev", cfg["name"]], check=True)
        print(f"READY {dev.listen_port} vnet={tun.vnet_hdr} gso={bind.gso} gro={bind.gro}", flush=True)

        def stdin_loop() -> None:
            for line in sys.stdin:
                cmd = line.strip()
                if cmd == "status":
                    peers = [
                        {
                            "public_key": s.public_key.hex(),
                            "endpoint": str(s.endpoint),
                            "last_handshake": s.last_handshake,
                            "rx_bytes": s.rx_bytes,
                            "tx_bytes": s.tx_bytes,
                        }
                        for s in dev.peers()
                    ]
                    print(json.dumps({"peers": peers, "counters": dev.counters()}), flush=True)
                elif cmd == "quit":
                    break
            done.set()

        threading.Thread(target=stdin_loop, daemon=True).start()
        done.wait()
    finally:
        dev.close()


if __name__ == "__main__":
    main()
