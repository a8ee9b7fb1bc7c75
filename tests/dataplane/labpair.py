"""Two lab hosts joined by a veth, each running our Device (tests/dataplane/node.py) on a real TUN."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import stop_process
from tests.lab.peers import gen_keypair

NODE = str(Path(__file__).resolve().parent / "node.py")
TUN_A, TUN_B = "10.66.0.1", "10.66.0.2"
TUN_A6, TUN_B6 = "fd66::1", "fd66::2"
UL_A, UL_B = "192.0.2.1", "192.0.2.2"
UL_A6, UL_B6 = "2001:db8::1", "2001:db8::2"


def new_key() -> tuple[bytes, bytes]:
    """A fresh (private, public) X25519 pair, raw bytes."""
    k = gen_keypair()
    return base64.b64decode(k.private), base64.b64decode(k.public)


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
    proc = host.popen_python(
        NODE, str(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True, bufsize=1
    )
    node = Node(host, cfg["name"], proc)
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(
            f"node on {host.name} failed: {line!r} {(lab.dir / f'{host.name}-node.stderr').read_text()[-2000:]}"
        )
    node.port = int(line.split()[1])
    node.info = line.strip()
    lab.add_cleanup(stop_node, node)
    return node


def stop_node(node: Node) -> None:
    """Ask the node to quit (it closes its device and TUN); SIGTERM, then SIGKILL, if it has not after 5 s."""
    p = node.proc
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(OSError, ValueError):
        p.stdin.write("quit\n")
        p.stdin.flush()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)
    stop_process(p, timeout=5)


def node_cfg(
    lab,
    key: bytes,
    port: int,
    tun: tuple[str, str],
    peer_key: bytes,
    peer_endpoint: str,
    peer_tun: tuple[str, str],
    **settings,
) -> dict:
    """node.py's config: a fresh interface name, tunnel addresses ``tun`` (v4, v6) and one peer owning ``peer_tun``."""
    return {
        **settings,
        "name": lab.ifname(),
        "private_key": key.hex(),
        "listen_port": port,
        "addresses": [f"{tun[0]}/24", f"{tun[1]}/64"],
        "peers": [
            {
                "public_key": peer_key.hex(),
                "endpoint": peer_endpoint,
                "allowed_ips": [f"{peer_tun[0]}/32", f"{peer_tun[1]}/128"],
            }
        ],
    }


def engine_pair(
    lab,
    *,
    v6: bool = False,
    timings: dict | None = None,
    tso: bool = False,
    mtu: int = 1420,
    hosts=None,
    extra_cfg: dict | None = None,
) -> EnginePair:
    """Start our engine on hosts a and b (created and linked unless ``hosts`` is given)."""
    a, b = hosts or link_hosts(lab)
    ka, pa = new_key()
    kb, pb = new_key()
    port_a, port_b = 51820, 51821
    ep_a = f"[{UL_A6}]:{port_a}" if v6 else f"{UL_A}:{port_a}"
    ep_b = f"[{UL_B6}]:{port_b}" if v6 else f"{UL_B}:{port_b}"
    common = {"mtu": mtu, "tso": tso, "timings": timings or {}, **(extra_cfg or {})}
    na = start_node(lab, a, node_cfg(lab, ka, port_a, (TUN_A, TUN_A6), pb, ep_b, (TUN_B, TUN_B6), **common))
    nb = start_node(lab, b, node_cfg(lab, kb, port_b, (TUN_B, TUN_B6), pa, ep_a, (TUN_A, TUN_A6), **common))
    return EnginePair(na, nb, v6, {"keys": (pa, pb)})


def wait_ping(host, addr: str, timeout: float = 20) -> None:
    assert host.wait_ping(addr, timeout), f"{host.name} cannot ping {addr} within {timeout}s"
