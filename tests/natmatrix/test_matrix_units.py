"""Unit tests of the NAT matrix's pure parts: cell lists, expectations, ping-log parsing, path reading."""

from __future__ import annotations

import pytest

from tests.lab.netlab import NAT_KINDS
from tests.natmatrix.matrix import EXPECTED_TAILSCALED, ROWS, _ping_stats, all_cells, parse_cells
from tests.natmatrix.nodes import NO_PATH, NODE_KINDS, LocalApiNode, OurNode, PathInfo


def test_all_cells_cover_every_unordered_pair_once_plus_same_nat():
    cells = all_cells()
    pairs = [frozenset((c.nat_a, c.nat_b)) for c in cells if not c.same_nat]
    assert len(pairs) == len(NAT_KINDS) * (len(NAT_KINDS) + 1) // 2 == 10
    assert set(pairs) == {frozenset((a, b)) for a in NAT_KINDS for b in NAT_KINDS}
    assert [c.name for c in cells if c.same_nat] == ["same-easy", "same-hard"]
    for c in cells:  # every cell has an expectation, and sites never collide
        assert c.expected() in ("direct", "derp")
        assert c.a != c.b


def test_parse_cells_accepts_either_order_and_rejects_unknown():
    assert [c.name for c in parse_cells("hard-none, same-easy")] == ["none-hard", "same-easy"]
    with pytest.raises(ValueError, match="unknown cell 'easy-cone'"):
        parse_cells("easy-cone")


def test_expectations_match_the_documented_rules():
    assert EXPECTED_TAILSCALED[frozenset({"hard"})] == "derp"
    assert EXPECTED_TAILSCALED[frozenset({"easy"})] == "direct"
    assert all(v == "derp" for k, v in EXPECTED_TAILSCALED.items() if isinstance(k, frozenset) and "udp-blocked" in k)


def test_ping_stats_first_reply_sent_and_received():
    log = """PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.
[1000.100000] no answer yet for icmp_seq=1
[1000.300000] no answer yet for icmp_seq=2
[1000.350000] 64 bytes from 100.64.0.2: icmp_seq=1 ttl=64 time=250 ms
[1000.351000] 64 bytes from 100.64.0.2: icmp_seq=2 ttl=64 time=51.0 ms
[1000.500000] 64 bytes from 100.64.0.2: icmp_seq=3 ttl=64 time=0.5 ms
[1000.700000] no answer yet for icmp_seq=4
"""
    first, sent, received = _ping_stats(log, 1000.0)
    assert first == pytest.approx(0.35)
    assert (sent, received) == (4, 3)
    assert _ping_stats("", 0.0) == (None, 0, 0)


class _StaticNode(LocalApiNode):
    kind = "static"

    def __init__(self, hostname: str, st: dict) -> None:
        super().__init__(hostname)
        self._st = st

    def status(self, timeout: float = 5.0) -> dict:
        return self._st

    def start(self, host, login_server, auth_key):  # pragma: no cover - not started in unit tests
        raise AssertionError

    def stop(self) -> None:
        pass


def _node(ip: str, peers: list[dict]) -> _StaticNode:
    return _StaticNode(
        ip,
        {
            "BackendState": "Running",
            "Self": {"TailscaleIPs": [ip, "fd7a::1"]},
            "Peer": {f"nodekey:{i}": p for i, p in enumerate(peers)},
        },
    )


@pytest.mark.parametrize(
    "peer,want",
    [
        pytest.param(
            {"TailscaleIPs": ["100.64.0.2"], "CurAddr": "203.0.113.12:41641", "Relay": "lab"},
            PathInfo("direct", "203.0.113.12:41641"),
            id="direct",
        ),
        pytest.param(
            {"TailscaleIPs": ["100.64.0.2"], "CurAddr": "", "Relay": "lab"}, PathInfo("derp", "lab"), id="derp"
        ),
        pytest.param({"TailscaleIPs": ["100.64.0.2"], "CurAddr": "", "Relay": ""}, NO_PATH, id="no-home-derp-yet"),
        pytest.param({"TailscaleIPs": ["100.64.0.9"], "CurAddr": "1.2.3.4:5"}, NO_PATH, id="other-peer"),
    ],
)
def test_path_to_reads_curaddr_then_relay(peer, want):
    a, b = _node("100.64.0.1", [peer]), _node("100.64.0.2", [])
    assert a.ip() == "100.64.0.1"
    assert a.path_to(b) == want
    assert a.knows("100.64.0.2") == ("100.64.0.2" in peer["TailscaleIPs"])


def test_our_node_is_enabled_unless_opted_out_and_rows_name_known_kinds():
    import os

    assert OurNode.available is (os.environ.get("MESH_NATMATRIX_OURS", "1") == "1")
    assert {k for row in ROWS.values() for k in row} <= set(NODE_KINDS)
