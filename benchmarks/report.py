"""Shared pieces of the lab benchmarks: machine description, iperf3 between lab hosts, a marked section in a doc."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from tests.lab.netlab import Host
from tests.lab.peers import peer_bin

IPERF_PORT = 5201


def machine() -> str:
    """CPU model, CPU count, kernel, Python and load average: the line recorded with every figure."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} CPUs visible, Linux {platform.release()}, "
        f"Python {platform.python_version()}, load average at start {load}"
    )


def iperf3(
    client: Host, server: Host, dst: str, seconds: int, extra: tuple[str, ...] | list[str] = (), poll: float = 0.1
) -> dict:
    """One iperf3 TCP run from ``client`` to a one-shot server bound to ``dst`` on ``server``; iperf3's "end" JSON."""
    srv = server.popen([peer_bin("iperf3"), "-s", "-1", "-B", dst])
    deadline = time.monotonic() + 10
    # "]*" also matches the bracketed form ss prints for IPv6 ("[fd00::2]:5201").
    while server.run(["sh", "-c", f"ss -ltn | grep -q '{dst}]*:{IPERF_PORT}'"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("iperf3 server did not start")
        time.sleep(poll)
    out = client.run([peer_bin("iperf3"), "-c", dst, "-t", str(seconds), "-J", *extra], timeout=seconds + 60).stdout
    srv.wait(timeout=15)
    return json.loads(out)["end"]


def write_section(doc: Path, begin: str, end: str, section: str, new_doc_head: str) -> None:
    """Replace the ``begin``..``end`` part of ``doc`` with ``section`` (appended if absent; doc created if missing)."""
    text = doc.read_text() if doc.exists() else new_doc_head
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
