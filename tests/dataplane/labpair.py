"""Two lab hosts joined by a veth, each running our Device (tests/dataplane/node.py) on a real TUN."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

NODE = str(Path(__file__).resolve().parent / "node.py")
TUN_A, TUN_B = "10.66.0.1", "10.66.0.2"
TUN_A6, TUN_B6 = "fd66::1", "fd66::2"
UL_A, UL_B = "192.0.2.1", "192.0.2.2"
UL_A6, UL_B6 = "2001:db8::1", "2001:db8::2"


def new_key() -> tuple[bytes, bytes]:
    k = X25519PrivateKey.generate()
    priv = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                           serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return priv, pub


@dataclass
class Node:
    host: object
    ifname: str
    proc: subprocess.Popen | None = None
    port: int = 0
    info: str = ""

    def status(self) -> dict:
        assert self.proc is not None and self.proc.poll() is None, "node exited"
        self.proc.stdin.write("status\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


@dataclass
class EnginePair:
    a: Node
    b: Node
    v6: bool
    extra: dict = field(default_factory=dict)


def link_hosts(lab):
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, b, f"{UL_A}/24", f"{UL_B}/24", a_addr6=f"{UL_A6}/64", b_addr6=f"{UL_B6}/64")
    return a, b


def start_node(lab, host, cfg: dict, timeout: float = 20) -> Node:
    path = lab.dir / f"{host.name}-node.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    errlog = open(lab.dir / f"{host.name}-node.stderr", "wb")
    proc = host.popen_python(NODE, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                             text=True, bufsize=1)
    node = Node(host, cfg["name"], proc)
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"node on {host.name} failed: {line!r} "
                           f"{(lab.dir / f'{host.name}-node.stderr').read_text()[-2000:]}")
    node.port = int(line.split()[1])
    node.info = line.strip()
    lab.add_cleanup(stop_node, node)
    return node


def stop_node(node: Node) -> None:
    p = node.proc
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(OSError, ValueError):
        p.stdin.write("quit\n")
        p.stdin.flush()
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)


def engine_pair(lab, *, v6: bool = False, timings: dict | None = None, tso: bool = False, mtu: int = 1420,
                hosts=None, extra_cfg: dict | None = None) -> EnginePair:
    """Start our engine on hosts a and b (created and linked unless ``hosts`` is given)."""
    a, b = hosts or link_hosts(lab)
    ka, pa = new_key()
    kb, pb = new_key()
    port_a, port_b = 51820, 51821
    ep_a = f"[{UL_A6}]:{port_a}" if v6 else f"{UL_A}:{port_a}"
    ep_b = f"[{UL_B6}]:{port_b}" if v6 else f"{UL_B}:{port_b}"
    name_a, name_b = lab.ifname(), lab.ifname()
    common = {"mtu": mtu, "tso": tso, "timings": timings or {}, **(extra_cfg or {})}
    cfg_a = {**common, "name": name_a, "private_key": ka.hex(), "listen_port": port_a,
             "addresses": [f"{TUN_A}/24", f"{TUN_A6}/64"],
             "peers": [{"public_key": pb.hex(), "endpoint": ep_b, "allowed_ips": [f"{TUN_B}/32", f"{TUN_B6}/128"]}]}
    cfg_b = {**common, "name": name_b, "private_key": kb.hex(), "listen_port": port_b,
             "addresses": [f"{TUN_B}/24", f"{TUN_B6}/64"],
             "peers": [{"public_key": pa.hex(), "endpoint": ep_a, "allowed_ips": [f"{TUN_A}/32", f"{TUN_A6}/128"]}]}
    na = start_node(lab, a, cfg_a)
    nb = start_node(lab, b, cfg_b)
    return EnginePair(na, nb, v6, {"keys": (pa, pb)})


def wait_ping(host, addr: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = host.run(["ping", "-c", "1", "-W", "1", addr], check=False)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.name} cannot ping {addr}: {r.stdout}{r.stderr}")
