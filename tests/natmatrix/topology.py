"""NAT matrix topology: an 'internet' switch with headscale (embedded DERP+STUN) and one client per NAT router.

Layout (all inside lab namespaces; nothing touches the machine's own network)::

    internet switch 203.0.113.0/24
      .1        headscale  http://203.0.113.1:8080, embedded DERP region 999 "lab", STUN :3478
      .10+n     NAT router n ("wan"), LAN 10.<n>.0.0/24, router 10.<n>.0.1, client 10.<n>.0.2(+)
      .100+n    a client with kind "none": its public address directly on the switch

NAT kinds (tests/lab/netlab.py): none, easy (masquerade), hard (masquerade random: a new
random port per destination), udp-blocked (masquerade + all forwarded UDP dropped).

Router firewall: every NAT router here also drops unsolicited packets addressed to itself on
its WAN (`ROUTER_FIREWALL`), as home routers do. Without it, a peer's early disco ping to the
router's mapped port reaches the router's own stack, conntrack confirms an inbound entry for
that address pair, and the client's own outgoing packet to the same peer then clashes with it,
so masquerade picks a *new* source port: an "easy" NAT turns into a hard one for exactly the
peer it is punching toward (measured: easy<->easy stayed on DERP for good, both routers holding
UNREPLIED entries refreshed by the 5 s disco pings). Dropping in the input hook discards the
unconfirmed conntrack entry, so the port-preserving mapping survives.
A *site* is one client host plus how it reaches the internet; `add_site(..., behind=other)`
puts a second client behind the same router ("two clients behind the same NAT").
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Callable

from tests.lab.headscale import Headscale
from tests.lab.netlab import NAT_KINDS, Host, Lab, LabError, Router
from tests.natmatrix.nodes import NodeKind

INET_PREFIX = "203.0.113"
HEADSCALE_ADDR = f"{INET_PREFIX}.1"
ROUTER_FIREWALL = (
    "add table inet mvlmxfw\n"
    "flush table inet mvlmxfw\n"
    "add chain inet mvlmxfw input { type filter hook input priority 0 ; }\n"
    'add rule inet mvlmxfw input iifname "wan" ct state new drop\n'
)
ROUTER_BASE = 10  # router n gets 203.0.113.(10+n)
PUBLIC_BASE = 100  # "none" client n gets 203.0.113.(100+n)
SHORT = {"none": "none", "easy": "easy", "hard": "hard", "udp-blocked": "udpb"}


@dataclass
class Site:
    """One client host: its NAT kind, router (None for kind "none") and the node started on it."""

    label: str
    nat: str
    host: Host
    router: Router | None = None
    node: NodeKind | None = None
    shares_nat_with: str | None = None


@dataclass
class MatrixTopology:
    """The internet segment, headscale and the sites; build with `MatrixTopology.build(lab)`."""

    lab: Lab
    headscale: Headscale
    auth_key: str
    sites: dict[str, Site] = field(default_factory=dict)
    _routers: int = 0
    _publics: int = 0

    @classmethod
    def build(cls, lab: Lab, user: str = "matrix", *, firewall: bool = True) -> "MatrixTopology":
        sw = lab.switch("inet")
        hs_host = lab.host("hs")
        sw.attach(hs_host, f"{HEADSCALE_ADDR}/24")
        hs = Headscale(hs_host, HEADSCALE_ADDR).start()
        key = hs.preauth_key(user, reusable=True, expiration="2h")
        return cls(lab=lab, headscale=hs, auth_key=key, firewall=firewall)

    @property
    def switch(self):
        return self.lab.switches["inet"]

    firewall: bool = True

    def add_site(self, label: str, nat: str, *, behind: str | None = None) -> Site:
        """A client host `label` behind a new router of kind `nat` (or on the switch for "none"),
        or behind the router of site `behind` (then `nat` must match that site's kind)."""
        if nat not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {nat!r}; expected one of {NAT_KINDS}")
        if label in self.sites:
            raise LabError(f"site {label!r} exists")
        host = self.lab.host(label)
        if behind is not None:
            other = self.sites[behind]
            if other.router is None or other.nat != nat:
                raise LabError(f"site {behind!r} has no {nat} router to share")
            other.router.add_host(host)
            site = Site(label, nat, host, other.router, shares_nat_with=behind)
        elif nat == "none":
            self._publics += 1
            self.switch.attach(host, f"{INET_PREFIX}.{PUBLIC_BASE + self._publics}/24")
            site = Site(label, nat, host)
        else:
            self._routers += 1
            n = self._routers
            router = self.lab.nat_router(
                f"r{label}", nat, self.switch, f"{INET_PREFIX}.{ROUTER_BASE + n}/24", f"10.{n}.0.0/24"
            )
            if self.firewall:
                router.host.run(["nft", "-f", "-"], input=ROUTER_FIREWALL)
            router.add_host(host)
            site = Site(label, nat, host, router)
        self.sites[label] = site
        return site

    def start_nodes(
        self, kinds: dict[str, Callable[[str], NodeKind]], *, workers: int = 4, timeout: float = 90.0
    ) -> None:
        """Start a node on every site in `kinds` (label -> factory(hostname)), a few at a time; wait until Running."""

        def one(label: str) -> None:
            site = self.sites[label]
            node = kinds[label](label)
            site.node = node
            node.start(site.host, self.headscale.url, self.auth_key)
            node.wait_running(timeout)
            node.ip()

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
            futs = {ex.submit(one, label): label for label in kinds}
            errors = []
            for f in concurrent.futures.as_completed(futs):
                try:
                    f.result()
                except Exception as e:  # collect all, raise one with every failure
                    errors.append(f"{futs[f]}: {e}")
        if errors:
            raise LabError("nodes failed to start:\n" + "\n".join(errors))


def side_label(side: str, nat: str) -> str:
    return f"{side}{SHORT[nat]}"


__all__ = ["MatrixTopology", "Site", "HEADSCALE_ADDR", "side_label", "SHORT"]
