"""Lab upstream DNS server (dnspython): answers A queries from a JSON zone, NXDOMAIN otherwise; UDP and TCP.

usage: upstream_dns.py BIND_ADDR PORT '{"name.": "ip", ...}'
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys

import dns.exception
import dns.message
import dns.rcode
import dns.rrset


def answer(zone: dict[str, str], data: bytes) -> bytes:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text().lower()
    if name in zone:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", zone[name]))
    else:
        r.set_rcode(dns.rcode.NXDOMAIN)
    return r.to_wire()


def recv_exactly(c: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = c.recv(n - len(data))
        if not more:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += more
    return data


def main(argv: list[str]) -> int:
    bind, port, zone = argv[0], int(argv[1]), json.loads(argv[2])
    fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((bind, port))
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((bind, port))
    t.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(u, selectors.EVENT_READ)
    sel.register(t, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is u:
                data, addr = u.recvfrom(65535)
                print("udp", addr[0], flush=True)
                try:
                    u.sendto(answer(zone, data), addr)
                except (OSError, dns.exception.DNSException) as e:
                    print("bad udp query:", e, flush=True)
            else:
                c, addr = t.accept()
                c.settimeout(2)
                with c:
                    try:
                        # A client may connect and close without a whole query (tailscaled's forwarder
                        # races TCP against UDP and drops the loser): never let that end the server.
                        data = recv_exactly(c, 2)
                        (n,) = struct.unpack("!H", data)
                        out = answer(zone, recv_exactly(c, n))
                        print("tcp", addr[0], flush=True)
                        c.sendall(struct.pack("!H", len(out)) + out)
                    except (OSError, EOFError, dns.exception.DNSException) as e:
                        print("tcp connection ended:", e, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
