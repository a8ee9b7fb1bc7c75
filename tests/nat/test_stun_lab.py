"""Our STUN requests against derper's STUN port and against coturn, from behind an easy NAT."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from tests.lab.derper import Derper, derper_available

pytestmark = [pytest.mark.lab]

CLIENT = r"""
import json, os, socket, sys
from engine.net import stun
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(3)
out = {"local_port": s.getsockname()[1]}
for dest in sys.argv[1:]:
    host, port = dest.rsplit(":", 1)
    txid = os.urandom(12)
    for attempt in range(3):
        s.sendto(stun.build_request(txid), (host, int(port)))
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        out[dest] = list(stun.parse_response(data, want_txid=txid).addr)
        break
print(json.dumps(out))
"""


def test_stun_derper_and_coturn_behind_easy_nat(lab):
    if not derper_available():
        pytest.skip("derper not built")
    if shutil.which("turnserver") is None:
        pytest.skip("coturn not installed")
    inet = lab.switch("inet")
    dh, th = lab.host("derp"), lab.host("turn")
    inet.attach(dh, "203.0.113.10/24")
    inet.attach(th, "203.0.113.20/24")
    r = lab.nat_router("r", "easy", inet, "203.0.113.2/24", "10.1.0.0/24")
    c = lab.host("c")
    r.add_host(c)
    d = Derper(
        addr="203.0.113.10", port=3340, stun_port=3478, workdir=lab.dir / "derper", popen=dh.popen, in_namespace=True
    )
    d.workdir.mkdir()
    d.start()
    try:
        th.popen(
            [
                "turnserver",
                "-n",
                "--stun-only",
                "-L",
                "203.0.113.20",
                "-p",
                "3478",
                "--no-cli",
                "--log-file",
                "stdout",
                "--simple-log",
            ]
        )
        time.sleep(1.0)
        res = json.loads(c.exec_python(CLIENT, "203.0.113.10:3478", "203.0.113.20:3478").stdout)
        port = res["local_port"]
        assert res["203.0.113.10:3478"] == ["203.0.113.2", port]  # masquerade keeps the port
        assert res["203.0.113.20:3478"] == ["203.0.113.2", port]
    finally:
        d.stop()
