"""Lab UDP echo: replies to every datagram with the sender's address as seen here ("ip:port"), on each given port."""

from __future__ import annotations

import selectors
import socket
import sys


def main(argv: list[str]) -> int:
    bind = argv[0] if argv else "0.0.0.0"
    ports = [int(p) for p in argv[1:]] or [3478]
    sel = selectors.DefaultSelector()
    fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for port in ports:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, port))
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            data, addr = s.recvfrom(2048)
            s.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
