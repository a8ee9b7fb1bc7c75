"""Lab tool: send raw IPv4 packets out of a TUN (AF_PACKET, so they enter the tunnel as-is) and collect UDP replies.

usage: tun_inject.py IFNAME SRC_IP PORT WAIT_S HEXPKT [HEXPKT ...]
Binds a UDP socket on SRC_IP:PORT (so replies are not answered with ICMP), sends each packet
on IFNAME, then prints one JSON line: the payloads (hex) of UDP packets that arrived on IFNAME
for PORT within WAIT_S seconds.
"""

from __future__ import annotations

import json
import socket
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def main(argv: list[str]) -> int:
    ifname, src, port, wait = argv[0], argv[1], int(argv[2]), float(argv[3])
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((src, port))
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    rx.bind((ifname, 0))
    rx.settimeout(0.2)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
    errors = []
    for h in argv[4:]:
        try:
            tx.sendto(bytes.fromhex(h), (ifname, ETH_P_IP))
        except OSError as e:
            errors.append(e.errno)
    replies = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            pkt, addr = rx.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == PACKET_OUTGOING or len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != 17:
            continue
        ihl = (pkt[0] & 15) * 4
        if int.from_bytes(pkt[ihl + 2 : ihl + 4], "big") == port:
            replies.append(pkt[ihl + 8 :].hex())
    print(json.dumps({"replies": replies, "send_errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
