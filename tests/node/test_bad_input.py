"""Lab: junk through the tunnel to the exit node, junk to its MagicDNS (100.100.100.100), oversize packets; nodes live.

Client c uses our node e as exit node (`exitnet` fixture), so 100.100.100.100 packets that c
puts on its TUN raw (AF_PACKET, bypassing c's own quad-100) travel through WireGuard to e. e's
filter drops them, as tailscale's does: an exit node's local networks are the default route
minus its attached subnets and minus the tailnet ranges, quad-100 included (peers reach an exit
node's resolver over peerAPI DoH, not raw). e's resolver itself gets the DNS junk from e's own
namespace (UDP to 100.100.100.100:53).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.lab.headscale import BASE_DOMAIN
from tests.node.labnode import INET, Node, udp_ask

pytestmark = pytest.mark.lab

INJECT = str(Path(__file__).resolve().parent / "tun_inject.py")
QUAD100 = "100.100.100.100"
SPORT = 40053
ASK_DNS = (  # send each UDP payload (hex) to QUAD100:53 from this namespace; print the replies (hex), one JSON line
    "import json, socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(0.2)\n"
    "for h in sys.argv[2:]:\n"
    "    s.sendto(bytes.fromhex(h), (sys.argv[1], 53))\n"
    "out, deadline = [], time.monotonic() + 3\n"
    "while time.monotonic() < deadline:\n"
    "    try:\n"
    "        out.append(s.recv(65535).hex())\n"
    "    except socket.timeout:\n"
    "        pass\n"
    "print(json.dumps(out))\n"
)


def _csum(b: bytes) -> int:
    if len(b) & 1:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, ident: int = 1, frag: int = 0, total: int | None = None
) -> bytes:
    """An IPv4 header (+ payload); ``frag`` = flags/offset word; ``total`` overrides the length field."""
    import ipaddress

    n = total if total is not None else 20 + len(payload)
    h = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        n,
        ident,
        frag,
        64,
        proto,
        0,
        ipaddress.ip_address(src).packed,
        ipaddress.ip_address(dst).packed,
    )
    h = h[:10] + struct.pack("!H", _csum(h)) + h[12:]
    return h + payload


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data  # checksum 0: none (IPv4)


def fragments(src: str, dst: str, l4: bytes, size: int = 1200, ident: int = 7) -> list[bytes]:
    out = []
    for off in range(0, len(l4), size):
        more = 0x2000 if off + size < len(l4) else 0
        out.append(ipv4(src, dst, 17, l4[off : off + size], ident=ident, frag=more | (off // 8)))
    return out


def inject(c, src: str, pkts: list[bytes], wait: float = 2.0) -> dict:
    out = c.run(
        [c.python_argv()[0], INJECT, "mesh0", src, str(SPORT), str(wait), *(p.hex() for p in pkts)], timeout=wait + 30
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _not_local(node) -> int:
    return ((node.status().get("Filter") or {}).get("Drops") or {}).get("destination-not-allowed", 0)


def _dropped_at_exit(c, ex, me: str, pkts: list[bytes], n: int) -> None:
    """Inject ``pkts`` at c (again while a path change loses them) until e's filter has ``n`` more not-local drops."""
    before = _not_local(ex)
    deadline = time.monotonic() + 30
    while True:
        r = inject(c, me, pkts)
        assert r["replies"] == [], r  # no answer ever comes back
        if _not_local(ex) >= before + n:  # e's debug-engine counts, read live
            return
        assert time.monotonic() < deadline, f"e's filter did not drop c's packets: {ex.status().get('Filter')}"


def test_junk_to_quad100_through_tunnel_and_oversize(exitnet):
    lab, hs, key, c, ex, ctl = exitnet
    cl = Node(c, hs.url, auth_key=key, args=("--exit-node", "py-e")).start()
    cl.wait(lambda s: s.get("ExitNodeID") is not None and s.get("InMapPoll"), "exit node resolved")
    assert udp_ask(c, INET, 7).startswith("203.0.113.1:")  # exit path up
    me = cl.ip

    def q(name: str, qid: int) -> bytes:
        m = dns.message.make_query(name, "A")
        m.id = qid
        return m.to_wire()

    # a good query through the tunnel: e's filter drops it (quad-100 is not local to a peer), no answer
    good = q(f"py-c.{BASE_DOMAIN}", 0x1111)
    _dropped_at_exit(c, ex, me, [ipv4(me, QUAD100, 17, udp(SPORT, 53, good))], 1)

    junk = [
        ipv4(me, QUAD100, 17, udp(SPORT, 53, good[:12] + b"\xff\xfe\xfd")),  # header + garbage: FORMERR
        ipv4(me, QUAD100, 17, udp(SPORT, 53, b"")),  # empty DNS message
        ipv4(me, QUAD100, 17, udp(SPORT, 53, b"\x12")),  # one byte
        ipv4(me, QUAD100, 17, udp(SPORT, 53, good), total=4000),  # IP length beyond the packet
        ipv4(me, QUAD100, 17, b"\x00\x35"),  # UDP header cut short
        ipv4(me, QUAD100, 6, b"\x9c\x55\x00\x35" + b"\0" * 8),  # TCP header cut short
        *fragments(me, QUAD100, udp(SPORT, 53, good + b"\0" * 5000)),  # 5 KB query (reassembled at e)
        *fragments(me, QUAD100, udp(SPORT, 53, q("x." * 60 + "example.", 0x2222) + b"\x01" * 60000)),  # ~64 KB
    ]
    # the parseable ones reach e and its filter drops them; the truncated ones never left c (below)
    _dropped_at_exit(c, ex, me, junk, 3)
    # the same DNS payloads to e's resolver from e itself: one FORMERR, the rest dropped, a good query answered
    dns_junk = [
        good[:12] + b"\xff\xfe\xfd",
        b"",
        b"\x12",
        good + b"\0" * 5000,
        q("x." * 60 + "example.", 0x2222) + b"\x01" * 60000,
    ]
    out = json.loads(ex.host.exec_python(ASK_DNS, QUAD100, *(p.hex() for p in dns_junk)).stdout.strip())
    got = [dns.message.from_wire(bytes.fromhex(h)) for h in out]
    assert [(m.id, m.rcode()) for m in got] == [(int.from_bytes(good[:2], "big"), dns.rcode.FORMERR)], out
    out = json.loads(ex.host.exec_python(ASK_DNS, QUAD100, good.hex()).stdout.strip())
    ans = dns.message.from_wire(bytes.fromhex(out[0]))
    assert ans.id == 0x1111 and [a.to_text() for rr in ans.answer for a in rr] == [me]
    # oversize ICMP both ways through the tunnel (fragmented to the 1280 MTU and reassembled)
    assert c.run(["ping", "-c", "2", "-W", "5", "-s", "8000", ex.ip], check=False).returncode == 0
    assert ex.host.run(["ping", "-c", "2", "-W", "5", "-s", "30000", me], check=False).returncode == 0

    # still alive and answering
    out = json.loads(ex.host.exec_python(ASK_DNS, QUAD100, q(f"py-e.{BASE_DOMAIN}", 0x3333).hex()).stdout.strip())
    ans = dns.message.from_wire(bytes.fromhex(out[0]))
    assert [a.to_text() for rr in ans.answer for a in rr] == [ex.ip]
    assert cl.proc.poll() is None and ex.proc.poll() is None
    drops = cl.wait(lambda s: s["Filter"]["Drops"], "c's filter drops")["Filter"]["Drops"]
    assert drops.get("unknown-proto", 0) >= 3, drops  # the truncated packets never left c
    assert udp_ask(c, INET, 7).startswith("203.0.113.1:")
