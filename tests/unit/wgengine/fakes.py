"""A fake System for UserspaceEngine tests: recording stand-ins for TUN, device, routers, DNS and peerAPI (no root)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.control.mapsession import MapSession
from engine.system import System
from engine.tailcfg import Hostinfo, MapResponse, Node as TNode
from engine.types.keys import NodePublic

NOW = 1_800_000_000.0
SELF = TNode(
    id=1,
    name="me.mesh.test.",
    key=NodePublic(b"\x01" * 32),
    user=7,
    addresses=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"),
)
EXIT_ALLOWED = ("100.64.0.3/32", "fd7a:115c:a1e0::3/128", "0.0.0.0/0", "::/0", "10.9.0.0/16")


def peer(i: int, **kw: Any) -> TNode:
    base: dict[str, Any] = dict(
        id=i,
        stable_id=f"n{i}CNTRL",
        name=f"node{i}.mesh.test.",
        key=NodePublic(bytes([i]) * 32),
        addresses=(f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"),
        endpoints=(f"192.0.2.{i}:41641",),
        hostinfo=Hostinfo(hostname=f"host{i}"),
    )
    base.update(kw)
    return TNode(**base)


def session_netmap(*peers: TNode, **resp: Any) -> tuple[MapSession, Any]:
    """A MapSession and its first (full) netmap."""
    s = MapSession()
    return s, s.apply(
        MapResponse(node=SELF, peers=peers or (peer(2), peer(3, allowed_ips=EXIT_ALLOWED)), **resp), now=NOW
    )


@dataclass
class Prefs:
    """Stands in for engine.ipn.engine_api.EngineConfig (the engine reads it through wgengine.prefs.EnginePrefs)."""

    exit_node_id: str = ""
    exit_node_ip: str = ""
    exit_node_allow_lan_access: bool = False
    corp_dns: bool = True
    route_all: bool = False
    advertise_routes: tuple[str, ...] = ()
    shields_up: bool = False


class Log:
    """The calls every fake records, in order: (subsystem, method, args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple]] = []
        self.fail: dict[tuple[str, str], Exception] = {}  # (subsystem, method) -> raise this

    def rec(self, who: str, what: str, *args: Any) -> None:
        self.calls.append((who, what, args))
        err = self.fail.get((who, what))
        if err is not None:
            raise err

    def of(self, who: str, what: str | None = None) -> list[tuple]:
        return [c[2] for c in self.calls if c[0] == who and (what is None or c[1] == what)]

    def names(self, who: str) -> list[str]:
        return [c[1] for c in self.calls if c[0] == who]

    def clear(self) -> None:
        self.calls.clear()


class _Fake:
    who = "?"

    def __init__(self, log: Log) -> None:
        self.log = log


class FakeTun(_Fake):
    who = "tun"

    def __init__(self, log: Log, name: str, mtu: int) -> None:
        super().__init__(log)
        self.name, self.mtu, self.filter = name, mtu, None

    def set_filter(self, f: Any) -> None:
        self.log.rec(self.who, "set_filter", f)
        self.filter = f

    def close(self) -> None:
        self.log.rec(self.who, "close")


class FakeDevice(_Fake):
    who = "device"
    listen_port = 41641

    def __init__(self, log: Log) -> None:
        super().__init__(log)
        self.allowed: dict[bytes, tuple[str, ...]] = {}

    def __getattr__(self, name: str) -> Any:
        def f(*a: Any, **kw: Any) -> None:
            self.log.rec(self.who, name, *a, *sorted(kw.items()))
            if name == "upsert_peer":
                self.allowed[a[0]] = tuple(kw["allowed_ips"])
            elif name == "remove_peer":
                self.allowed.pop(a[0], None)

        return f

    def peers(self) -> list:
        return []


class FakeOSDNS(_Fake):
    who = "osdns"

    def __init__(self, log: Log, nameservers: tuple[str, ...] = ()) -> None:
        super().__init__(log)
        self.nameservers = nameservers

    def set(self, cfg: Any) -> None:
        self.log.rec(self.who, "set", cfg)

    def original_nameservers(self) -> list[str]:
        """The OS's own resolvers (what the real DNSManager uses when the tailnet sets none)."""
        return list(self.nameservers)

    def cleanup_leftovers(self) -> bool:
        return False


class FakeDNS(_Fake):
    who = "dns"

    def __init__(self, log: Log, os_dns: Any) -> None:
        super().__init__(log)
        self.os_dns = os_dns

    async def __aenter__(self) -> "FakeDNS":
        self.log.rec(self.who, "start")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.log.rec(self.who, "close")

    def set(
        self,
        self_node: Any,
        peers: Any,
        dns_config: Any,
        *,
        accept_dns: bool = True,
        exit_node: Any = None,
        using_exit_node: bool | None = None,
    ) -> None:
        self.log.rec(self.who, "set", self_node is not None, accept_dns, exit_node, using_exit_node)


class _Core:
    def __init__(self, log: Log) -> None:
        self.log = log

    def set_access(self, access: Any) -> None:
        self.log.rec("peerapi", "set_access")


class FakePeerAPI(_Fake):
    who = "peerapi"

    def __init__(self, log: Log) -> None:
        super().__init__(log)
        self.core = _Core(log)
        self.ports: dict[str, int] = {}

    async def __aenter__(self) -> "FakePeerAPI":
        self.log.rec(self.who, "start")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.log.rec(self.who, "close")

    def set_addresses(self, ips: list[str]) -> dict[str, int]:
        self.log.rec(self.who, "set_addresses", tuple(ips))
        self.ports = {ip: 40000 + i for i, ip in enumerate(ips)}
        return self.ports


class Recorder(_Fake):
    """Router / ExitRouter / Forwarder: records every call."""

    def __init__(self, log: Log, who: str) -> None:
        super().__init__(log)
        self.who = who

    def __getattr__(self, name: str) -> Any:
        def f(*a: Any, **kw: Any) -> Any:
            self.log.rec(self.who, name, *a)
            return [] if name in ("cleanup_leftovers", "reassert") else None

        return f


@dataclass
class FakeWorld:
    """The fakes a fake System built (the latest of each)."""

    log: Log = field(default_factory=Log)
    objs: dict[str, Any] = field(default_factory=dict)
    os_dns_args: tuple = ()  # (dns mode, tun, journal) new_os_dns was called with
    journals: dict = field(default_factory=dict)  # subsystem -> the journal of OS changes it was given
    bypass_installed: int = 0
    iface_prefixes: tuple[str, ...] = ("192.168.7.2/24",)
    os_nameservers: tuple[str, ...] = ("192.168.1.1",)  # the LAN's resolver, as the OS had it

    def system(self, *, dns_fails: bool = False, real_dns: bool = False) -> System:
        """real_dns: the real DNSManager (resolver config, OS DNS on FakeOSDNS) without listeners, not FakeDNS."""
        log = self.log

        def keep(name: str, obj: Any, journal: Any = None) -> Any:
            self.objs[name] = obj
            if journal is not None:
                self.journals[name] = journal
            return obj

        def new_dns(os_dns: Any, hook: Any, logger: Any) -> Any:
            if dns_fails:
                raise OSError("cannot bind 100.100.100.100:53")
            if real_dns:
                from engine.dns.manager import DNSManager

                return keep("dns", DNSManager(os_dns, listen=(), logger=logger))
            return keep("dns", FakeDNS(log, os_dns))

        def new_os_dns(mode: str, tun: str, journal: Any, logger: Any) -> Any:
            self.os_dns_args = (mode, tun, journal)
            return keep("osdns", FakeOSDNS(log, self.os_nameservers))

        def bypass() -> None:
            self.bypass_installed += 1

        return System(
            new_tun=lambda name, mtu: keep("tun", FakeTun(log, name, mtu)),
            new_device=lambda name, **kw: keep("device", FakeDevice(log)),
            new_router=lambda tun, logger: keep("router", Recorder(log, "router")),
            new_exit_router=lambda journal, logger: keep("exit", Recorder(log, "exit"), journal),
            new_forwarder=lambda journal, logger: keep("fwd", Recorder(log, "fwd"), journal),
            new_os_dns=new_os_dns,
            new_dns=new_dns,
            new_magicsock=None,
            new_peerapi=lambda dns, name, logger: keep("peerapi", FakePeerAPI(log)),
            mark_socket=lambda sock: None,
            install_bypass_marking=bypass,
            interface_prefixes=lambda exclude: self.iface_prefixes,
            local_endpoints=lambda port, exclude: [f"192.0.2.100:{port}"],
            hostname=lambda: "testhost",
            clock=lambda: NOW,
        )
