"""Attack: local users flood the LocalAPI with watch streams and dribbled requests; root and operator still get in."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile

import pytest

from engine.localapi.connlimit import ConnLimits
from engine.localapi.server import REQUEST_TIMEOUT
from tests.helper.attack import counters, raw_request, request_as
from tests.helper.conftest import HelperProc, TempUser, helper_env

pytestmark = pytest.mark.lab  # needs root: creates users, switches uid

LIMITS = ConnLimits()

# argv: socket n; opens n watch streams (read-only mask: NoPrivateKeys), prints what came back, then holds
# them open until stdin closes.
FLOOD = r"""
import json, socket, sys
sock, n = sys.argv[1], int(sys.argv[2])
conns, ok, refused, other, msgs = [], 0, 0, [], set()
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    try:
        s.sendall(b"GET /localapi/v0/watch-ipn-bus?mask=18 HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n")
    except OSError:
        pass  # refused: the 503 may already be there
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        code = data.split(b" ")[1] if data.startswith(b"HTTP/1.1 ") else b"0"
        if code == b"503":
            while chunk:
                chunk = s.recv(4096)
                data += chunk
    except OSError as e:
        code = repr(e).encode()
    if code == b"200":
        ok += 1
    elif code == b"503":
        refused += 1
        msgs.add(json.loads(data.partition(b"\r\n\r\n")[2])["Error"])
    else:
        other.append(code.decode(errors="replace"))
    conns.append(s)
print(json.dumps({"ok": ok, "refused": refused, "other": other, "messages": sorted(msgs)}), flush=True)
sys.stdin.read()
"""

# argv: socket; one connection dribbles its request head, one its body (a byte each 0.5 s, well under any
# per-read timeout); prints per connection the seconds until the helper answered/closed and its status.
DRIBBLE = r"""
import json, socket, sys, threading, time
sock = sys.argv[1]
head = b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
body_head = (b"PATCH /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\nContent-Length: 200\r\n\r\n")
results = {}
def run(name, first, slow):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.settimeout(0.5)
    t0 = time.monotonic()
    s.sendall(first)
    out = b""
    for b in slow:
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        try:
            chunk = s.recv(4096)
            out += chunk
            if not chunk:
                break
        except socket.timeout:
            pass
        except OSError:
            break
    s.settimeout(5)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    code = int(out.split(b" ")[1]) if out.startswith(b"HTTP/1.1 ") else 0
    results[name] = {"seconds": round(time.monotonic() - t0, 1), "status": code}
ts = [threading.Thread(target=run, args=("head", b"", head)),
      threading.Thread(target=run, args=("body", body_head, b"{" + b" " * 199))]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(results), flush=True)
"""


@pytest.fixture
def floods():
    """Starts FLOOD processes as given users; ends them (by pid) afterwards, also on failure."""
    procs: list[subprocess.Popen] = []

    def start(user: TempUser, sock: str, n: int) -> dict:
        p = subprocess.Popen(
            user.argv(sys.executable, "-c", FLOOD, sock, str(n)),
            env=helper_env(),
            cwd=tempfile.gettempdir(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        line = p.stdout.readline()
        assert line, f"flood process of {user.name} printed nothing (rc={p.poll()})"
        return json.loads(line)

    try:
        yield start
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                p.stdin.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture
def op_helper(shared_dir, make_user):
    op = make_user()
    h = HelperProc(shared_dir, "--operator", op.name).start()
    try:
        yield h, op
    finally:
        rc = h.stop()
        if rc not in (0, None):
            print(h.log()[-3000:])


def test_watch_stream_flood_leaves_root_and_operator_served(op_helper, make_user, floods):
    h, op = op_helper
    attackers = [make_user() for _ in range(4)]
    per_uid, pool = LIMITS.per_uid, LIMITS.total - LIMITS.root_reserved - LIMITS.privileged_reserved
    results = [floods(u, h.socket, per_uid + 4) for u in attackers]
    assert [r["ok"] for r in results] == [per_uid, per_uid, per_uid, pool - 3 * per_uid], results
    assert all(not r["other"] for r in results), results
    assert any("too many connections from user" in m for r in results for m in r["messages"]), results
    assert any("busy" in m for m in results[-1]["messages"]), results

    # every unprivileged slot is taken: one more user is refused, root and the operator still get answers
    late = make_user()
    got = request_as(late, h.socket, "GET", "/localapi/v0/status")
    assert got["status"] == 503, got
    assert raw_request(h.socket, "GET", "/localapi/v0/status").startswith(b"HTTP/1.1 200 ")
    got = request_as(op, h.socket, "GET", "/localapi/v0/status")
    assert got["status"] == 200, got
    got = request_as(op, h.socket, "POST", "/localapi/v0/login-interactive")
    assert got["status"] == 204, got

    snap = counters(h.socket)
    c, conns = snap["Counters"], snap["Connections"]
    assert c["rejected_conns_per_uid"] == 3 * 4, c
    assert c["rejected_conns_full"] == (per_uid + 4) - (pool - 3 * per_uid) + 1, c
    assert c["rejected_conns"] == c["rejected_conns_per_uid"] + c["rejected_conns_full"]
    assert conns["ByUID"][str(attackers[0].uid)] == per_uid, conns
    assert "refusing connections" in h.log() and "Traceback" not in h.log()


def test_slow_dribbled_request_is_cut_off_by_the_whole_request_deadline(helper, make_user):
    u = make_user()
    p = u.run(sys.executable, "-c", DRIBBLE, helper.socket, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    for name in ("head", "body"):
        # a byte each 0.5 s would take ~100 s; the helper answers 408 and closes at the deadline
        assert res[name]["status"] == 408, res
        assert REQUEST_TIMEOUT - 1 <= res[name]["seconds"] <= REQUEST_TIMEOUT + 5, res
    c = counters(helper.socket)["Counters"]
    assert c["request_timeouts"] == 2, c
    assert raw_request(helper.socket, "GET", "/localapi/v0/status").startswith(b"HTTP/1.1 200 ")
    assert "Traceback" not in helper.log()


def test_admission_table():
    """The sans-IO core: tiers, per-uid caps, reserved slots, release."""
    from engine.localapi.connlimit import Admission, Tier

    a = Admission(ConnLimits(total=10, root_reserved=2, privileged_reserved=3, per_uid=3))
    assert [a.admit(1001, Tier.USER) for _ in range(4)] == ["", "", "", "per_uid"]
    assert [a.admit(1002, Tier.USER) for _ in range(3)] == ["", "", "full"]  # users share 10 - 2 - 3 = 5
    assert [a.admit(1000, Tier.OPERATOR) for _ in range(4)] == ["", "", "", "full"]  # up to 10 - 2 = 8
    assert [a.admit(0, Tier.ROOT) for _ in range(3)] == ["", "", "full"]
    assert a.total == 10 and dict(a.rejected) == {"per_uid": 1, "full": 3}
    a.release(1001)
    assert a.admit(1002, Tier.USER) == "full"  # 9 open: above the users' share
    a.release(0)
    a.release(0)
    assert a.admit(1001, Tier.USER) == "full" and a.admit(0, Tier.ROOT) == ""
    with pytest.raises(RuntimeError):
        a.release(4242)
    with pytest.raises(ValueError):
        ConnLimits(total=8, root_reserved=4, privileged_reserved=4, per_uid=1)
