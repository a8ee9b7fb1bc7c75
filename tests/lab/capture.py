"""Packet captures inside a lab host: tcpdump started before the traffic, stopped and read as one line per packet."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from tests.lab.netlab import Host, stop_process, wait_ready

# "12:00:00.123456 IP 192.0.2.11.41234 > 192.0.2.1.8080: tcp 0" (tcpdump -nn -q -tttt is not used: plain time)
PACKET_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")


class Capture:
    """``with Capture(host, "eth0", "host 192.0.2.1") as cap: ...`` then ``cap.packets`` (lines) after the block."""

    def __init__(self, host: Host, iface: str, bpf: str, *, start_timeout: float = 10.0) -> None:
        self.host, self.iface, self.bpf = host, iface, bpf
        self.start_timeout = start_timeout
        self.packets: list[str] = []
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Capture":
        self._proc = self.host.popen(["tcpdump", "-i", self.iface, "-nn", "-q", "-l", "-U", self.bpf])
        wait_ready(
            lambda: "listening on" in Host.log_of(self._proc),
            what=f"tcpdump on {self.host.name}/{self.iface}",
            until="'listening on' in its log",
            proc=self._proc,
            timeout=self.start_timeout,
            interval=0.05,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[str]:
        p = self._proc
        if p is not None and p.poll() is None:
            time.sleep(0.2)  # let the last packets reach the capture
            stop_process(p, 5, signal.SIGINT)
        if p is not None:
            self.packets = [ln for ln in Host.log_of(p).splitlines() if PACKET_LINE.match(ln)]
        return self.packets

    def between(self, src: str, dst: str) -> list[str]:
        """Packets from ``src`` (address or address.port prefix) to ``dst`` (address.port or address)."""
        return [ln for ln in self.packets if f" {src}" in ln.split(" > ")[0] and f" > {dst}" in ln]
