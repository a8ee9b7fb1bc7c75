"""FakeEngine: a NodeEngine that pretends to log in and serves a canned netmap (tests only; MESH_TESTING=1)."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from engine.dns.manager import DNSManager
from engine.dns.osconfig import OSDNSConfig
from engine.dns.resolver import Forward, Reply
from engine.ipn.dnsquery import build_query, resolver_view
from engine.ipn.engine_api import (
    AuthURL,
    DNSOSView,
    DNSQueryOutcome,
    DNSUnavailable,
    EngineConfig,
    EngineFailed,
    EngineSnapshot,
    EngineUp,
    EventSink,
    LoggedIn,
    LoginNeeded,
    NetMapUpdate,
    NetMapView,
    NodeKeyRotated,
    NodeKeys,
    PeerView,
    PingOutcome,
    UserView,
)
from engine.ipn.exitnode import ident_of_view, resolve_exit_node
from engine.net.tsaddr import EXIT_ROUTES
from engine.types.keys import NodePrivate

FAKE_USER = UserView(id=1001, login_name="alice@example.com", display_name="Alice")
FAKE_SUFFIX = "tail.example.com"
# The tailnet's DNS settings (tailcfg.DNSConfig JSON): MagicDNS, a global resolver, split DNS (plain and DoH).
FAKE_DNS_CONFIG: dict[str, Any] = {
    "Resolvers": [{"Addr": "192.0.2.1"}],
    "Routes": {
        "corp.example.com": [{"Addr": "192.0.2.53"}],
        "lab.example.com": [{"Addr": "https://doh.lab.example/dns-query", "BootstrapResolution": ["192.0.2.54"]}],
    },
    "Domains": [FAKE_SUFFIX],
    "Proxied": True,
    "CertDomains": [f"self.{FAKE_SUFFIX}"],
    "ExtraRecords": [{"Name": f"printer.{FAKE_SUFFIX}", "Value": "100.64.0.9"}],
}
FAKE_OS_NAMESERVERS = ("198.51.100.53",)  # the "system's own" resolver before MagicDNS
FAKE_PEERAPI_PORT = 40123  # exit1's peerAPI (it can proxy DNS: DoH at http://100.64.0.3:40123/dns-query)
# What the fake world's upstream resolvers know; every other forwarded name is NXDOMAIN.
FAKE_UPSTREAM_RECORDS: dict[str, tuple[str, str]] = {
    "www.example.org.": ("A", "192.0.2.80"),
    "intranet.corp.example.com.": ("A", "10.1.2.3"),
}


def fake_netmap(self_key: str, hostname: str = "self", exit_node_id: str = "") -> NetMapView:
    """A small tailnet: self, a direct peer, an exit node reached via DERP, an offline node."""

    def peer(i: int, name: str, **kw: Any) -> PeerView:
        return PeerView(
            node_id=i,
            stable_id=f"n{i}CNTRL",
            node_key="nodekey:" + f"{i:02x}" * 32,
            name=f"{name}.{FAKE_SUFFIX}.",
            hostname=name,
            os=kw.pop("os", "linux"),
            user_id=FAKE_USER.id,
            addresses=(f"100.64.0.{i}", f"fd7a:115c:a1e0::{i}"),
            created="2026-11-01T10:00:00Z",
            key_expiry="2027-05-01T10:00:00Z",
            **kw,
        )

    self_node = PeerView(
        node_id=1,
        stable_id="n1CNTRL",
        node_key=self_key,
        name=f"{hostname}.{FAKE_SUFFIX}.",
        hostname=hostname,
        os="linux",
        user_id=FAKE_USER.id,
        addresses=("100.64.0.1", "fd7a:115c:a1e0::1"),
        allowed_ips=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"),
        online=True,
        created="2026-11-01T10:00:00Z",
        key_expiry="2027-05-01T10:00:00Z",
    )
    peers = (
        peer(
            2,
            "peer1",
            online=True,
            allowed_ips=("100.64.0.2/32", "fd7a:115c:a1e0::2/128"),
            endpoints=("192.0.2.2:41641",),
            home_derp=1,
            cur_addr="192.0.2.2:41641",
            relay="fra",
            rx_bytes=1234,
            tx_bytes=5678,
            last_handshake=1_795_000_000.0,
            active=True,
        ),
        peer(
            3,
            "exit1",
            online=True,
            allowed_ips=("100.64.0.3/32", "fd7a:115c:a1e0::3/128", *EXIT_ROUTES),
            home_derp=1,
            relay="fra",
            active=bool(exit_node_id == "n3CNTRL"),
        ),
        peer(
            4,
            "offline1",
            os="windows",
            online=False,
            last_seen="2026-11-20T08:00:00Z",
            allowed_ips=("100.64.0.4/32", "fd7a:115c:a1e0::4/128"),
        ),
    )
    return NetMapView(
        self_node=self_node,
        peers=peers,
        users=(FAKE_USER,),
        domain="example.com",
        magic_dns_suffix=FAKE_SUFFIX,
        magic_dns_enabled=True,
        derp_regions={1: "fra"},
        dns_config=FAKE_DNS_CONFIG,
    )


class _FakeOSDNS:
    """An OS configurator that only remembers (DNSManager's OSConfigurator protocol)."""

    def __init__(self) -> None:
        self.last: OSDNSConfig | None = None

    def set(self, cfg: OSDNSConfig | None) -> None:
        self.last = cfg

    def cleanup_leftovers(self) -> bool:
        return False

    def original_nameservers(self) -> list[str]:
        return list(FAKE_OS_NAMESERVERS)


def _fake_upstream_reply(query: bytes) -> bytes:
    """The fake world's recursive resolver: FAKE_UPSTREAM_RECORDS, else NXDOMAIN."""
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.RA
    rr = q.question[0]
    known = FAKE_UPSTREAM_RECORDS.get(rr.name.to_text().lower())
    if known is None:
        r.set_rcode(dns.rcode.NXDOMAIN)
    elif dns.rdatatype.from_text(known[0]) == rr.rdtype:
        r.answer.append(dns.rrset.from_text(rr.name, 300, "IN", known[0], known[1]))
    return r.to_wire()


class FakeEngine:
    """Implements engine_api.NodeEngine in memory.

    Refuses to exist unless MESH_TESTING=1 (STYLE R11). It records calls (`calls`) so backend tests
    can assert on the boundary, lets a test finish an interactive login (`complete_login()`) and play
    the control server replacing the node key (`rotate_node_key()`; or, with `rotate_on_login` /
    MESH_FAKE_ROTATE_NODE_KEY=1 for a helper process, once at the first login: "the key was expired,
    control made the node re-register under a new one").
    Optional `system_hooks` (up, down) let lab tests make real, journaled system changes while
    "running" (tests/support/fake_helper.py --fake-system, used by tests/helper/test_hygiene.py).
    """

    def __init__(
        self,
        *,
        auto_login: bool = True,
        system_hooks: tuple[Callable[[EngineConfig], Awaitable[None]], Callable[[], Awaitable[None]]] | None = None,
        fail_start: str = "",
        rotate_on_login: bool | None = None,
    ) -> None:
        if os.environ.get("MESH_TESTING") != "1":
            raise RuntimeError("FakeEngine is for tests only (set MESH_TESTING=1)")
        if rotate_on_login is None:  # a helper process under test (tests/support/fake_helper.py) reads the env
            rotate_on_login = os.environ.get("MESH_FAKE_ROTATE_NODE_KEY") == "1"
        self.rotate_on_login = rotate_on_login
        self.rotations = 0
        self.auto_login = auto_login
        self.system_hooks = system_hooks
        self.fail_start = fail_start
        self.calls: list[str] = []
        self.registered: set[tuple[str, str]] = set()  # (control URL, node key) pairs control "knows"
        self.running = False
        self.cfg: EngineConfig | None = None
        self._sink: EventSink | None = None
        self._keys: NodeKeys | None = None
        self._netmap: NetMapView | None = None
        self._login_seq = 0

    # -- NodeEngine --

    async def start(self, cfg: EngineConfig, keys: NodeKeys, sink: EventSink) -> None:
        self.calls.append("start")
        self.cfg, self._keys, self._sink = cfg, keys, sink
        if self.fail_start:
            sink(EngineFailed(self.fail_start))
            return
        self.running = True
        nk = str(keys.node.public())
        if (cfg.control_url, nk) in self.registered or cfg.auth_key or self.auto_login:
            await self._finish_login()
        else:
            sink(LoginNeeded("node key not registered"))

    async def reconfigure(self, cfg: EngineConfig) -> None:
        self.calls.append("reconfigure")
        self.cfg = cfg
        if self.running and self._sink and self._keys and self._netmap is not None:
            self._netmap = fake_netmap(str(self._keys.node.public()), cfg.hostname or "self", cfg.exit_node_id)
            self._sink(NetMapUpdate(self._netmap))

    async def stop(self) -> None:
        self.calls.append("stop")
        if self.running and self.system_hooks:
            await self.system_hooks[1]()
        self.running = False
        self._netmap = None

    async def login_interactive(self) -> None:
        self.calls.append("login_interactive")
        self._login_seq += 1
        if self._sink:
            self._sink(AuthURL(f"https://fake-control.invalid/a/{self._login_seq:04d}"))

    async def logout(self) -> None:
        self.calls.append("logout")
        if self._keys and self.cfg:
            self.registered.discard((self.cfg.control_url, str(self._keys.node.public())))
        await self.stop()

    def status(self) -> EngineSnapshot:
        return EngineSnapshot(netmap=self._netmap, live_derps=1 if self._netmap else 0, tun=self.running)

    async def ping(self, ip: str, kind: str, size: int) -> PingOutcome:
        self.calls.append("ping")
        nm = self._netmap
        if nm is None:
            return PingOutcome(err="no netmap")
        for p in nm.peers:
            if ip in p.addresses:
                if not p.online:
                    await asyncio.sleep(0)
                    return PingOutcome(node_ip=p.addresses[0], node_name=p.name.split(".")[0], err="timeout")
                if p.cur_addr:
                    return PingOutcome(
                        node_ip=p.addresses[0],
                        node_name=p.name.split(".")[0],
                        latency_seconds=0.0012,
                        endpoint=p.cur_addr,
                    )
                return PingOutcome(
                    node_ip=p.addresses[0],
                    node_name=p.name.split(".")[0],
                    latency_seconds=0.025,
                    derp_region_id=p.home_derp or 1,
                    derp_region_code=nm.derp_regions.get(p.home_derp or 1, ""),
                )
        return PingOutcome(err="no matching peer")

    def _dns_manager(self) -> DNSManager:
        """MagicDNS as the running node would configure it from the fake netmap and prefs (no sockets)."""
        nm, cfg = self._netmap, self.cfg
        if not self.running or nm is None or cfg is None:
            raise DNSUnavailable("the engine is not running")
        exit_peer = resolve_exit_node(cfg.exit_node_id or cfg.exit_node_ip, nm.peers, ident_of_view)
        exit_node = None
        if exit_peer is not None:
            exit_node = {
                "Addresses": list(exit_peer.allowed_ips[:2]),
                "Cap": 130,
                "Hostinfo": {
                    "Services": [
                        {"Proto": "peerapi4", "Port": FAKE_PEERAPI_PORT},
                        {"Proto": "peerapi-dns-proxy", "Port": 1},
                    ]
                },
            }
        mgr = DNSManager(_FakeOSDNS(), listen=())
        mgr.set(
            nm.self_node,
            nm.peers,
            nm.dns_config,
            accept_dns=cfg.corp_dns,
            exit_node=exit_node,
            using_exit_node=bool(cfg.exit_node_id or cfg.exit_node_ip),
        )
        return mgr

    def dns_os_config(self) -> DNSOSView:
        mgr = self._dns_manager()
        o = mgr.os_config()
        base = tuple(mgr.base_nameservers())
        if o is None:
            return DNSOSView(base_nameservers=base)
        return DNSOSView(
            applied=True,
            nameservers=o.nameservers,
            search_domains=o.search_domains,
            match_domains=o.match_domains,
            route_all=o.route_all,
            base_nameservers=base,
        )

    async def dns_query(self, name: str, qtype: int) -> DNSQueryOutcome:
        self.calls.append("dns_query")
        mgr = self._dns_manager()
        ups = mgr.upstreams_for(name)
        action = mgr.resolver.handle(build_query(name, qtype), tcp=True)
        if isinstance(action, Forward):
            action = mgr.resolver.finish_forward(action.query, _fake_upstream_reply(action.query))
        if not isinstance(action, Reply):
            raise DNSUnavailable(f"MagicDNS dropped the query ({action.reason})")
        return DNSQueryOutcome(reply=action.wire, resolvers=tuple(resolver_view(u) for u in ups))

    async def netcheck(self) -> dict[str, Any]:
        self.calls.append("netcheck")
        return {
            "UDP": True,
            "IPv4": True,
            "GlobalV4": "192.0.2.10:41641",
            "MappingVariesByDestIP": False,
            "PreferredDERP": 1,
            "RegionLatency": {"1": 12.0},
            "RegionCodes": {"1": "fra"},
        }

    def debug_status(self) -> dict[str, Any]:
        return {"State": "synced" if self.running else "stopped", "Fake": True}

    async def aclose(self) -> None:
        self.calls.append("aclose")
        await self.stop()

    # -- test controls --

    async def complete_login(self) -> None:
        """What the browser + control do when the user finishes an interactive login."""
        await self._finish_login()

    async def rotate_node_key(self) -> NodePrivate:
        """Control replaced the node key (as after expiry + re-login): re-register under a new one."""
        assert self._sink is not None and self._keys is not None and self.cfg is not None
        old = self._keys.node
        new = NodePrivate.generate()
        self._keys = NodeKeys(self._keys.machine, new, source=self._keys.source)
        self.registered.discard((self.cfg.control_url, str(old.public())))
        self.registered.add((self.cfg.control_url, str(new.public())))
        self.rotations += 1
        self._sink(NodeKeyRotated(old.public(), new))
        if self._netmap is not None:
            self._netmap = fake_netmap(str(new.public()), self.cfg.hostname or "self", self.cfg.exit_node_id)
            self._sink(NetMapUpdate(self._netmap))
        return new

    async def _finish_login(self) -> None:
        assert self._sink is not None and self._keys is not None and self.cfg is not None
        if self.rotate_on_login and self.rotations == 0:
            await self.rotate_node_key()
        nk = str(self._keys.node.public())
        self.registered.add((self.cfg.control_url, nk))
        self._sink(LoggedIn(FAKE_USER, node_id="n1CNTRL"))
        if self.system_hooks:
            await self.system_hooks[0](self.cfg)
        self._netmap = fake_netmap(nk, self.cfg.hostname or "self", self.cfg.exit_node_id)
        self._sink(NetMapUpdate(self._netmap))
        self._sink(EngineUp())
