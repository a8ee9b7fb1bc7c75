"""Lab helpers for node tests: headscale with a policy, our node (serve + LocalAPI) with routing/DNS prefs."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from engine.localapi.schema import Prefs
from tests.control.nodes import EXIT_ROUTES, OurNode, advertised, canonical_routes, wait_until
from tests.lab.headscale import Headscale
from tests.lab.netlab import REPO_ROOT, Host, Lab, LabError

UDP_ECHO = str(REPO_ROOT / "tests" / "lab" / "udp_echo.py")
UPSTREAM_DNS = str(REPO_ROOT / "tests" / "exitdns" / "upstream_dns.py")
INET = "203.0.113.2"  # the "internet" host of the exitnet fixture, reachable only through the exit node
INET6 = "2001:db8:1::2"  # ... and its IPv6 address (isp has 2001:db8:1::1, e 2001:db8:2::2)
LANHOST = "192.0.2.20"  # a host on the client's LAN
UP_DNS = "192.0.2.53"  # the lab's upstream DNS host on the LAN (dns_lan)


def start_headscale(ctl: Host, policy: dict | None = None) -> Headscale:
    """headscale in ``ctl`` (its own namespace); with ``policy``, a file-mode ACL policy."""
    return Headscale(ctl, policy=policy).start()


def dns_lan(lab: Lab, zone: dict[str, str]) -> tuple[Host, Host, Host, Host]:
    """ctl 192.0.2.1, a .11, b .12 and up .53 (a dnspython server answering ``zone``) on one switch."""
    sw = lab.switch("lan")
    ctl, a, b, up = (lab.host(n) for n in ("ctl", "a", "b", "up"))
    for h, n in ((ctl, 1), (a, 11), (b, 12), (up, 53)):
        sw.attach(h, f"192.0.2.{n}/24")
    up.popen_python(UPSTREAM_DNS, UP_DNS, "53", json.dumps(zone))
    up.wait_for(["sh", "-c", f"ss -lun | grep -q {UP_DNS}:53"])
    return ctl, a, b, up


class Node(OurNode):
    """Our node with its journals in <lab dir>/<host>-run and MagicDNS via resolv.conf (when the namespace has one)."""

    dns_mode = "resolv.conf"

    def __init__(self, host: Host, login_server: str, *, auth_key: str | None = None, args: tuple[str, ...] = ()):
        super().__init__(host, login_server, auth_key=auth_key, extra_args=args)

    def restart(self, *args: str, auth_key: str | None = None) -> "Node":
        """Start again (same state file: the same node) with these flags; prefs not named are reset."""
        self.extra_args = tuple(args)
        self.auth_key = auth_key
        return self.start()


def prefs_dict(p: Prefs) -> dict:
    """LocalAPI prefs in the shape node tests use (exit_node: the ExitNodeID, or ExitNodeIP until resolved)."""
    routes = list(p.advertise_routes or ())
    return {
        "exit_node": p.exit_node_id or p.exit_node_ip or None,
        "exit_node_allow_lan": p.exit_node_allow_lan_access,
        "advertise_exit_node": p.exit_routes_advertised(),
        "advertise_routes": [r for r in routes if r not in EXIT_ROUTES],
        "accept_dns": p.corp_dns,
        "accept_routes": p.route_all,
        "shields_up": p.shields_up,
    }


class DrivenNode(Node):
    """A Node changed at run time: ``call("set_exit_node", ...)`` etc. become LocalAPI prefs edits."""

    def call(self, method: str, *args: Any, **kwargs: Any) -> dict:
        """Node's old run-time API as LocalAPI prefs edits; returns the resulting prefs (prefs_dict)."""
        fn = getattr(self, f"_{method}", None)
        if fn is None:
            raise LabError(f"{method}: not a node prefs call")
        return prefs_dict(fn(*args, **kwargs))

    def _set_exit_node(self, node: str | None, *, allow_lan: bool | None = None):
        return self.set_exit_node(node, allow_lan=allow_lan)

    def _set_exit_node_allow_lan(self, allow: bool):
        return self.edit_prefs(exit_node_allow_lan_access=bool(allow))

    def _set_advertise_exit_node(self, on: bool):
        return self.edit_prefs(advertise_routes=advertised(list(self.prefs().advertise_routes or ()), bool(on)))

    def _set_advertise_routes(self, routes: Iterable[str] | str):
        offers = self.prefs().exit_routes_advertised()
        return self.edit_prefs(advertise_routes=advertised(canonical_routes(routes), offers))

    def _set_accept_dns(self, on: bool):
        return self.edit_prefs(corp_dns=bool(on))

    def _set_accept_routes(self, on: bool):
        return self.edit_prefs(route_all=bool(on))

    def _set_shields_up(self, on: bool):
        return self.edit_prefs(shields_up=bool(on))

    def _set_prefs(self, **changes: Any):
        """Several at once, by the old names (exit_node, exit_node_allow_lan, advertise_*, accept_*, shields_up)."""
        names = {
            "exit_node_allow_lan": "exit_node_allow_lan_access",
            "accept_dns": "corp_dns",
            "accept_routes": "route_all",
            "shields_up": "shields_up",
        }
        unknown = set(changes) - set(names) - {"exit_node", "advertise_routes", "advertise_exit_node"}
        if unknown:
            raise LabError(f"set_prefs: unknown prefs {sorted(unknown)}")
        if "exit_node" in changes:
            p = self.set_exit_node(changes.pop("exit_node"), allow_lan=changes.pop("exit_node_allow_lan", None))
        else:
            p = self.prefs()
        edit = {names[k]: bool(v) for k, v in changes.items() if k in names}
        if "advertise_routes" in changes or "advertise_exit_node" in changes:
            routes = canonical_routes(changes.get("advertise_routes", p.advertise_routes))
            offers = changes.get("advertise_exit_node", p.exit_routes_advertised())
            edit["advertise_routes"] = advertised(routes, bool(offers))
        return self.edit_prefs(**edit) if edit else p


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


ACL_POLICY = {"acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:8080"], "proto": "tcp"}]}


def acl_servers(*hosts: tuple[Host, str]) -> None:
    """On each (host, tailnet IP): TCP whoami on 8080 and 8081, UDP echo on 8080."""
    for h, ip in hosts:
        for port in (8080, 8081):
            tcp_whoami(h, ip, port)
        h.popen_python(UDP_ECHO, ip, "8080")


def assert_acl_denials(ah: Host, a_ip: str, bh: Host, b_ip: str) -> None:
    """ACL_POLICY's denials between alice (ah) and bob (bh); alice may still ping bob (a rule between the IPs)."""
    # denied: another port, the other direction, another protocol
    assert tcp_ask(ah, b_ip, 8081, timeout=3).startswith("error")
    assert tcp_ask(bh, a_ip, 8080, timeout=3).startswith("error")
    assert udp_ask(ah, b_ip, 8080, tries=2) == "timeout"
    assert udp_ask(bh, a_ip, 8080, tries=2) == "timeout"
    # ICMP: alice may ping bob (a rule alice->bob exists), bob may not ping alice
    assert ah.ping(b_ip, count=2).returncode == 0
    assert bh.ping(a_ip, count=2, timeout=2).returncode != 0


QUAD100_RAW = (  # one UDP payload (hex) to 100.100.100.100:53; prints the reply (hex) or "timeout"
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(1.0)\n"
    "s.sendto(bytes.fromhex(sys.argv[1]), ('100.100.100.100', 53))\n"
    "try:\n"
    "    print(s.recv(65535).hex())\n"
    "except socket.timeout:\n"
    "    print('timeout')\n"
)


def dig(h: Host, *args: str, tries: int = 2) -> str:
    """dig's output (2 s timeout; failures give their output too)."""
    return h.run(["dig", "+time=2", f"+tries={tries}", *args], check=False).stdout


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
