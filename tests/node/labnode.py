"""Lab helpers for node tests: headscale with a policy, our node with routing/DNS flags, a run-time driver."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.control.nodes import OurNode, wait_until
from tests.lab.headscale import Headscale
from tests.lab.netlab import REPO_ROOT, Host, LabError

HERE = Path(__file__).resolve().parent
UDP_ECHO = str(REPO_ROOT / "tests" / "lab" / "udp_echo.py")
UPSTREAM_DNS = str(REPO_ROOT / "tests" / "exitdns" / "upstream_dns.py")
DRIVER = str(HERE / "drive_node.py")
INET = "203.0.113.2"  # the "internet" host of the exitnet fixture, reachable only through the exit node
INET6 = "2001:db8:1::2"  # ... and its IPv6 address (isp has 2001:db8:1::1, e 2001:db8:2::2)
LANHOST = "192.0.2.20"  # a host on the client's LAN


def start_headscale(ctl: Host, policy: dict | None = None) -> Headscale:
    """headscale in ``ctl`` (its own namespace); with ``policy``, a file-mode ACL policy."""
    return Headscale(ctl, policy=policy).start()


class Node(OurNode):
    """Our mesh-helper with its own journal dir (and MagicDNS via resolv.conf when the namespace has one)."""

    def __init__(self, host: Host, login_server: str, *, auth_key: str | None = None, args: tuple[str, ...] = ()):
        self.run_dir = host.lab.dir / f"{host.name}-run"
        extra = ("--run-dir", str(self.run_dir), "--dns-mode", "resolv.conf", *args)
        super().__init__(host, login_server, auth_key=auth_key, extra_args=extra)

    def start(self) -> "Node":
        self.status_path.unlink(missing_ok=True)  # never read a killed predecessor's status
        return super().start()

    def restart(self, *args: str, auth_key: str | None = None) -> "Node":
        self.extra_args = ("--run-dir", str(self.run_dir), "--dns-mode", "resolv.conf", *args)
        self.auth_key = auth_key
        return self.start()


class DrivenNode(Node):
    """Our node run by tests/node/drive_node.py: Node's Python API (set_exit_node, ...) over stdin."""

    def start(self) -> "DrivenNode":
        self.status_path.unlink(missing_ok=True)
        args = ["--login-server", self.login_server, "--state", str(self.state), "--hostname", self.hostname,
                "--tun", self.tun, "--port", str(self.port), "--status-file", str(self.status_path),
                "--endpoint-interval", "2", *self.extra_args]
        env = {"MESH_AUTH_KEY": self.auth_key} if self.auth_key else {}
        self.proc = self.host.popen_python(DRIVER, *args, env=env, stdin=subprocess.PIPE)
        self.host.lab.add_cleanup(self.stop)
        self._calls = 0
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """As OurNode.stop, but a node that does not stop in time first dumps its threads' stacks into its log."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGUSR1)  # drive_node.py: faulthandler stack dump
            time.sleep(1)
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def call(self, method: str, *args, timeout: float = 30, **kwargs) -> dict:
        """Call Node.<method>(*args, **kwargs) in the running node; returns the resulting prefs."""
        self._calls += 1
        n = self._calls
        req = {"n": n, "method": method, "args": list(args), "kwargs": kwargs}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if line.startswith(f"RESULT {n} "):
                    res = json.loads(line.split(" ", 2)[2])
                    if "error" in res:
                        raise LabError(f"{method}: {res['error']}")
                    return res
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{method}: no result; log:\n{self.log()[-3000:]}")
            time.sleep(0.05)


def routing_dump(h: Host, *, skip_dev: str | None = None) -> str:
    """ip rules and all routing tables (v4 + v6); lines naming ``skip_dev`` left out."""
    parts = []
    for fam in ("-4", "-6"):
        parts.append(h.run(["ip", fam, "rule", "show"]).stdout)
        routes = h.run(["ip", fam, "route", "show", "table", "all"]).stdout.splitlines()
        parts.append("\n".join(r for r in routes if not (skip_dev and f"dev {skip_dev}" in r)))
    return "\n".join(parts)


def route_get(h: Host, dst: str, mark: int | None = None) -> str:
    return h.run(["ip", "route", "get", dst] + (["mark", hex(mark)] if mark else [])).stdout


ASK_UDP = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(1.0)\n"
    "for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 5):\n"
    "    try:\n"
    "        s.sendto(b'hi', (sys.argv[1], int(sys.argv[2])))\n"
    "        print(s.recvfrom(100)[0].decode()); break\n"
    "    except socket.timeout:\n"
    "        pass\n"
    "    except OSError as e:\n"
    "        print('error', e.errno); break\n"
    "else:\n"
    "    print('timeout')\n"
)

TCP_WHOAMI = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    c, a = s.accept()\n"
    "    print('peer', a[0], flush=True)\n"
    "    c.sendall(f'{a[0]}:{a[1]}'.encode()); c.close()\n"
)

TCP_ASK = (
    "import socket, sys\n"
    "try:\n"
    "    t = float(sys.argv[3]) if len(sys.argv) > 3 else 5\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=t)\n"
    "    print(c.recv(100).decode() or 'closed')\n"
    "except OSError as e:\n"
    "    print('error', type(e).__name__, e.errno)\n"
)


def udp_ask(h: Host, ip: str, port: int, tries: int = 5) -> str:
    return h.exec_python(ASK_UDP, ip, str(port), str(tries)).stdout.strip()


def tcp_ask(h: Host, ip: str, port: int, timeout: float = 5) -> str:
    return h.exec_python(TCP_ASK, ip, str(port), str(timeout), timeout=timeout + 30).stdout.strip()


def tcp_whoami(h: Host, ip: str, port: int):
    p = h.popen_python(TCP_WHOAMI, ip, str(port))
    wait_until(lambda: "listening" in Host.log_of(p) or p.poll() is not None, "tcp whoami server")
    return p


@contextlib.contextmanager
def netns_resolv_conf(ns: str, text: str):
    """/etc/netns/<ns>/resolv.conf: `ip netns exec` bind-mounts it over /etc/resolv.conf (so the node may manage it)."""
    d = Path("/etc/netns") / ns
    d.mkdir(parents=True, exist_ok=False)
    try:
        (d / "resolv.conf").write_text(text)
        yield d / "resolv.conf"
    finally:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()


def approve_exit_routes(hs: Headscale, hostname: str) -> int:
    """headscale nodes approve-routes for 0.0.0.0/0,::/0; returns the node ID."""
    n = wait_until(lambda: hs.node_by_hostname(hostname), f"{hostname} in headscale")
    nid = int(n["id"])
    hs.cli("nodes", "approve-routes", "-i", str(nid), "-r", "0.0.0.0/0,::/0", json_out=False)
    return nid
