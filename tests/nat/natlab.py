"""NAT lab scenes for magicsock tests: an 'internet' switch, derpers, NAT routers, node agents."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.derper import Derper, merge_derp_maps
from tests.lab.netlab import REPO_ROOT, Host, Lab, Router

AGENT = str(Path(__file__).with_name("node_agent.py"))


class Agent:
    """A node_agent.py process in a lab host, driven by JSON lines."""

    def __init__(self, host: Host, derp_map_path: Path, port: int = 0, wg: str = "", wg_addr: str = ""):
        self.host = host
        self.wg_addr = wg_addr.split("/")[0]
        self.log_path = host.lab.dir / f"agent-{host.name}.log"
        log = open(self.log_path, "wb")
        self.proc = host.popen(
            [
                sys.executable,
                AGENT,
                "--derp-map",
                str(derp_map_path),
                "--port",
                str(port),
                *(["--wg", wg, "--wg-addr", wg_addr] if wg else []),
            ],
            env={"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_TESTING": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            bufsize=0,
        )
        log.close()
        hello = self._read(20.0)
        self.node, self.disco, self.port = hello["node"], hello["disco"], hello["port"]
        self.endpoints: list[str] = []
        self.report: dict = {}

    def _read(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            if not r:
                raise TimeoutError(f"agent {self.host.name} silent; log: {self.log()[-3000:]}")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"agent {self.host.name} exited; log: {self.log()[-3000:]}")
            return json.loads(line)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, cmd: str, timeout: float = 15.0, **kw) -> dict:
        self.proc.stdin.write((json.dumps({"cmd": cmd, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def netcheck(self) -> dict:
        r = self.call("netcheck")
        self.endpoints = r["endpoints"]
        self.report = r["report"]
        return r

    def peer_json(self, home: int) -> dict:
        d = {"node": self.node, "disco": self.disco, "derp": home, "endpoints": self.endpoints}
        if self.wg_addr:
            d["allowed_ips"] = [f"{self.wg_addr}/32"]
        return d

    def status(self) -> dict:
        return self.call("status")

    def path_to(self, other: "Agent") -> dict:
        return self.status()["peers"].get(other.node, {})

    def rx_from(self, other: "Agent") -> int:
        return self.status()["rx"].get(other.node, 0)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=3)
            except Exception:  # noqa: BLE001
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Scene:
    lab: Lab
    derpers: list[Derper]
    a: Agent
    b: Agent
    ra: Router | None
    rb: Router | None
    derp_map: dict
    extra: dict = field(default_factory=dict)

    def connect(self) -> None:
        """Netcheck both, then exchange netmap-style peer info (what control would do)."""
        self.a.netcheck()
        self.b.netcheck()
        home = self.derpers[0].region_id
        self.a.call("peers", peers=[self.b.peer_json(self.b.report.get("PreferredDERP") or home)])
        self.b.call("peers", peers=[self.a.peer_json(self.a.report.get("PreferredDERP") or home)])

    def pump(self, interval: float = 0.1) -> None:
        self.a.call("pump", to=self.b.node, interval=interval)
        self.b.call("pump", to=self.a.node, interval=interval)

    def close(self) -> None:
        for ag in (self.a, self.b):
            ag.close()
        for d in self.derpers:
            d.stop()


def home_router_firewall(r: Router) -> None:
    """Drop new inbound connections to the router itself on its WAN, as home routers do.

    Without it, a peer's early disco ping to our public ip:port is conntracked by the router
    as an inbound flow to itself; our own later packet to that peer then collides with that
    tuple and masquerade picks another port, so the simultaneous open never lines up. Dropping
    in the input hook keeps such entries unconfirmed (never inserted)."""
    rules = (
        "add table inet mvlin\n"
        "add chain inet mvlin input { type filter hook input priority 0 ; }\n"
        'add rule inet mvlin input iifname "wan" ct state new drop\n'
    )
    r.host.run(["nft", "-f", "-"], input=rules)


def build(lab: Lab, kind_a: str, kind_b: str, n_derpers: int = 2, wg: bool = False) -> Scene:
    """internet 203.0.113.0/24 with derpers at .10/.11; A and B behind routers of the given kinds
    ('none' = host directly on the internet)."""
    inet = lab.switch("inet")
    derpers = []
    for i in range(n_derpers):
        h = lab.host(f"derp{i + 1}")
        ip = f"203.0.113.{10 + i}"
        inet.attach(h, f"{ip}/24")
        d = Derper(
            addr=ip,
            port=3340,
            stun_port=3478,
            region_id=900 + i,
            workdir=lab.dir / f"derper{i + 1}",
            popen=h.popen,
            in_namespace=True,
        )
        d.workdir.mkdir(parents=True, exist_ok=True)
        d.start()
        derpers.append(d)
    derp_map = merge_derp_maps(derpers)
    map_path = lab.dir / "derpmap.json"
    map_path.write_text(json.dumps(derp_map))
    hosts, routers = [], []
    for name, kind, n in (("a", kind_a, 1), ("b", kind_b, 2)):
        h = lab.host(name)
        if kind == "none":
            inet.attach(h, f"203.0.113.{100 + n}/24")
            routers.append(None)
        else:
            r = lab.nat_router(f"r{name}", kind, inet, f"203.0.113.{n + 1}/24", f"10.{n}.0.0/24")
            r.add_host(h)
            home_router_firewall(r)
            routers.append(r)
        hosts.append(h)
    if wg:
        a = Agent(hosts[0], map_path, wg=lab.ifname("wg"), wg_addr="100.64.0.1/32")
        b = Agent(hosts[1], map_path, wg=lab.ifname("wg"), wg_addr="100.64.0.2/32")
        hosts[0].run(["ip", "route", "replace", "100.64.0.2/32", "dev", a_wg(a)])
        hosts[1].run(["ip", "route", "replace", "100.64.0.1/32", "dev", a_wg(b)])
    else:
        a = Agent(hosts[0], map_path)
        b = Agent(hosts[1], map_path)
    return Scene(lab=lab, derpers=derpers, a=a, b=b, ra=routers[0], rb=routers[1], derp_map=derp_map)


def a_wg(agent: Agent) -> str:
    argv = agent.proc.args
    return argv[argv.index("--wg") + 1]


def wait_for(pred, timeout: float, step: float = 0.25):
    """Poll `pred()` until truthy; returns (value, seconds waited) or (None, timeout)."""
    t0 = time.monotonic()
    while True:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None, timeout
        time.sleep(step)
