"""Capture helper (not a test): our DeviceCore over UDP vs wireguard-go; run by capture_wireguard_go.sh."""

import base64
import json
import pathlib
import random
import socket
import struct
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))
from engine.wg.core import DeviceCore  # noqa: E402


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def icmp_packet(src, dst, typ, ident=1, seq=1):
    icmp = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + b"meshvpn-sanity"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + icmp


mode, wgpub_b64, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
priv = base64.b64decode(sys.argv[4])

SEED = 20261128 + port
WALL = 1764300000.0
core = DeviceCore(priv, wall_clock=lambda: WALL, random_bytes=random.Random(SEED).randbytes)
log = {
    "mode": mode,
    "seed": SEED,
    "wall": WALL,
    "our_private_key": priv.hex(),
    "wg_public_key": base64.b64decode(wgpub_b64).hex(),
    "events": [],
}
peer = core.add_peer(base64.b64decode(wgpub_b64), endpoint=("127.0.0.1", 51000), allowed_ips=["10.9.0.1/32"])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
s.settimeout(0.2)
me = "10.9.0.2" if mode == "initiator" else "10.9.0.3"
if mode == "initiator":
    assert core.encrypt(peer, icmp_packet(me, "10.9.0.1", 8), time.monotonic()) is None
deadline = time.monotonic() + 8
ok = False
while time.monotonic() < deadline and not ok:
    for o in core.handle_timers(time.monotonic()):
        s.sendto(o.data, o.addr)
        log["events"].append(["sent", o.data.hex()])
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        continue
    log["events"].append(["recv", data.hex()])
    r = core.decrypt(data, src, time.monotonic())
    print("recv", data[0], len(data), "->", r if not isinstance(r, tuple) else ("packet", r[1][20]), flush=True)
    if isinstance(r, tuple):
        pkt = r[1]
        if mode == "initiator" and pkt[20] == 0:
            ok = True
        if mode == "responder" and pkt[20] == 8:
            ident, seq = struct.unpack("!HH", pkt[24:28])
            reply = icmp_packet(me, "10.9.0.1", 0, ident, seq)[:28] + pkt[28:]
            # recompute icmp checksum for the echoed payload
            icmp = bytearray(reply[20:])
            icmp[2:4] = b"\0\0"
            icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
            reply = reply[:2] + struct.pack("!H", 20 + len(icmp)) + reply[4:10] + b"\0\0" + reply[12:20]
            reply = reply[:10] + struct.pack("!H", csum(reply[:20])) + reply[12:20] + bytes(icmp)
            d = core.encrypt(peer, reply, time.monotonic())
            if d is not None:
                s.sendto(d, peer.endpoint)
                log["events"].append(["sent", d.hex()])
            ok = True
    for o in core.datagrams_to_send():
        s.sendto(o.data, o.addr)
        log["events"].append(["sent", o.data.hex()])
time.sleep(0.3)
json.dump(log, open(f"/tmp/wgsanity/{mode}.json", "w"), indent=1)
print("RESULT", mode, "ok" if ok else "FAIL", core.counters(), flush=True)
