"""Known-answer transcripts captured against wireguard-go (see vectors/*.json SOURCE): replayed
byte-for-byte through a DeviceCore seeded with the same randomness."""

from __future__ import annotations

import json
import pathlib
import random
import socket
import struct

import pytest

from engine.wg.core import DeviceCore

VECTORS = pathlib.Path(__file__).parent / "vectors"
WG_ADDR = ("127.0.0.1", 51000)


def _load(mode: str) -> dict:
    return json.loads((VECTORS / f"wireguard_go_{mode}.json").read_text())


def _core(v: dict) -> tuple[DeviceCore, object]:
    core = DeviceCore(
        bytes.fromhex(v["our_private_key"]),
        wall_clock=lambda: v["wall"],
        random_bytes=random.Random(v["seed"]).randbytes,
    )
    peer = core.add_peer(bytes.fromhex(v["wg_public_key"]), endpoint=WG_ADDR, allowed_ips=["10.9.0.1/32"])
    return core, peer


def test_we_initiate_to_wireguard_go():
    v = _load("initiator")
    (_, init), (_, resp), (_, data), (_, reply) = v["events"]
    core, peer = _core(v)
    icmp = _captured_echo_request(core, peer)  # staged; starts the handshake
    # our initiation is byte-identical to the one wireguard-go accepted
    outs = core.datagrams_to_send()
    assert [o.data.hex() for o in outs] == [init]
    assert core.decrypt(bytes.fromhex(resp), WG_ADDR, 0.1) is None
    (o,) = core.datagrams_to_send()  # the staged echo request, sealed under the new session
    assert o.data.hex() == data
    r = core.decrypt(bytes.fromhex(reply), WG_ADDR, 0.2)
    assert isinstance(r, tuple) and r[0] is peer
    pkt = r[1]
    assert pkt[9] == 1 and pkt[20] == 0  # ICMP echo reply
    assert pkt[12:16] == bytes([10, 9, 0, 1]) and pkt[16:20] == bytes([10, 9, 0, 2])
    assert pkt[28:] == icmp[28:]


def _captured_echo_request(core, peer):
    """The exact ICMP echo request 10.9.0.2 -> 10.9.0.1 the capture script sent."""

    def csum(b):
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        return (~s) & 0xFFFF

    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"meshvpn-sanity"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0,
        64,
        1,
        0,
        socket.inet_aton("10.9.0.2"),
        socket.inet_aton("10.9.0.1"),
    )
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    pkt = hdr + icmp
    assert core.encrypt(peer, pkt, 0.0) is None
    return pkt


def test_wireguard_go_initiates_to_us():
    v = _load("responder")
    (_, init), (_, resp), (_, data), (_, reply) = v["events"]
    core, peer = _core(v)
    core.allowed_ips.clear()
    core.add_allowed_ip(peer, "10.9.0.1/32")
    assert core.decrypt(bytes.fromhex(init), WG_ADDR, 0.0) is None
    (o,) = core.datagrams_to_send()
    assert o.data.hex() == resp  # byte-identical response
    assert peer.keypairs.next is not None and peer.keypairs.current is None
    r = core.decrypt(bytes.fromhex(data), WG_ADDR, 0.1)
    assert isinstance(r, tuple) and r[1][20] == 8  # wireguard-go's ping, decrypted
    assert peer.keypairs.current is not None and peer.keypairs.next is None  # confirmed
    assert peer.last_handshake == v["wall"]
    # replaying the captured initiation is refused (timestamp not newer)
    assert core.decrypt(bytes.fromhex(init), WG_ADDR, 1.0) == "replayed_timestamp"
    assert core.decrypt(bytes.fromhex(data), WG_ADDR, 1.0) == "replay"


@pytest.mark.parametrize("mode", ["initiator", "responder"])
def test_vectors_have_a_source(mode):
    assert "wireguard-go" in _load(mode)["SOURCE"]
