"""Lab stand-in for the WireGuard tunnel: TUN <-> plain UDP to one peer, with engine.filter on both directions.

usage: tun_pipe.py TUN BIND_IP:PORT PEER_IP:PORT MARK(0|1) FILTER_JSON
FILTER_JSON = {"rules": [FilterRule...] | null (AllowNone), "local": ["100.64.0.2/32", ...]}
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import socket
import struct
import sys

from engine.filter import ACCEPT, Filter
from engine.router.exitnode import mark_socket

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def main(argv: list[str]) -> int:
    tun_name, bind, peer, mark, spec = argv[0], argv[1], argv[2], argv[3] == "1", json.loads(argv[4])
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tun_name.encode(), IFF_TUN | IFF_NO_PI))
    flt = Filter.allow_none() if spec["rules"] is None else Filter.from_rules(spec["rules"], spec["local"])[0]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if mark:
        mark_socket(s)
    bh, bp = bind.rsplit(":", 1)
    ph, pp = peer.rsplit(":", 1)
    s.bind((bh, int(bp)))
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ, "tun")
    sel.register(s, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    last = None
    while True:
        for key, _ in sel.select(0.5):
            try:
                if key.data == "tun":
                    pkt = os.read(fd, 65535)
                    if flt.check_out(pkt) is ACCEPT:
                        s.sendto(pkt, (ph, int(pp)))
                else:
                    pkt = s.recv(65535)
                    if flt.check_in(pkt) is ACCEPT:
                        os.write(fd, pkt)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                print("io error", e, flush=True)
        stats = (flt.accepted_in, {k.value: v for k, v in flt.drops.items() if v})
        if stats != last:
            print("filter", json.dumps(stats), flush=True)
            last = stats


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
