"""Bad LocalAPI input: malformed HTTP, huge heads/bodies, unknown endpoints, bad JSON → 4xx; server keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time

import pytest

from engine.localapi.client import HelperNotRunning, LocalAPIError, LocalClient
from engine.localapi.schema import MaskedPrefs
from engine.localapi.server import SocketInUse, SocketPathError, bind_unix_socket
from tests.helper.conftest import HelperProc


def raw(sock_path: str, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(read_timeout)
    s.connect(sock_path)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_line(resp: bytes) -> int:
    assert resp.startswith(b"HTTP/1.1 "), resp[:200]
    return int(resp.split(b" ", 2)[1])


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: local-tailscaled.sock\r\n{extra}Connection: close\r\n\r\n".encode()


def still_serving(helper: HelperProc) -> None:
    st = asyncio.run(LocalClient(helper.socket).status())
    assert st.backend_state == "NeedsLogin"


CASES = [
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="not-http"),
    pytest.param(
        b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\nBad Header\r\n\r\n", 400, id="bad-header"
    ),
    pytest.param(
        b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        431,
        id="huge-head",
    ),
    pytest.param(b"GET /localapi/v0/status HTTP/1.1\r\nX-Big: " + b"a" * 200000, 431, id="endless-head"),
    pytest.param(get("/localapi/v0/nope"), 404, id="unknown-endpoint"),
    pytest.param(get("/etc/passwd"), 404, id="outside-localapi"),
    pytest.param(get("/localapi/v0/start"), 405, id="wrong-method"),
    pytest.param(get("/localapi/v0/status", "Origin: http://evil.example\r\n"), 403, id="browser-origin"),
    pytest.param(
        b"GET /localapi/v0/status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", 403, id="wrong-host"
    ),
    pytest.param(
        b"PATCH /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b"Content-Length: 7\r\nConnection: close\r\n\r\n{nope!}",
        400,
        id="invalid-json",
    ),
    pytest.param(
        b"PATCH /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b'Content-Length: 24\r\nConnection: close\r\n\r\n{"WantRunningSet":"yes"}',
        400,
        id="mistyped-json",
    ),
    pytest.param(
        b"PATCH /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n[]",
        400,
        id="json-not-object",
    ),
    pytest.param(
        b"POST /localapi/v0/start HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b"Content-Length: 999999999\r\nConnection: close\r\n\r\n{",
        413,
        id="huge-content-length",
    ),
    pytest.param(
        b"POST /localapi/v0/ping?ip=banana&type=disco HTTP/1.1\r\nHost: local-tailscaled.sock\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        400,
        id="bad-ping-ip",
    ),
    pytest.param(get("/localapi/v0/watch-ipn-bus?mask=abc"), 400, id="bad-mask"),
    pytest.param(get("/localapi/v0/whois"), 400, id="whois-missing-addr"),
]


@pytest.mark.parametrize("data,want", CASES)
def test_bad_requests_get_4xx_and_server_keeps_serving(helper, data, want):
    resp = raw(helper.socket, data)
    assert status_line(resp) == want, resp[:300]
    body = resp.split(b"\r\n\r\n", 1)[1]
    if want != 431 and body:
        payload = body if b"Transfer-Encoding: chunked" not in resp else body.split(b"\r\n", 1)[1]
        assert json.loads(payload.split(b"\r\n0\r\n")[0])["Error"]
    still_serving(helper)


def test_huge_chunked_body_is_cut_off(helper):
    head = b"PATCH /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % (256 * 1024) + b" " * (256 * 1024) + b"\r\n"
    resp = raw(helper.socket, head + chunk * 6)
    assert status_line(resp) == 413
    still_serving(helper)


def test_half_request_then_hangup_and_idle_connections(helper):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(helper.socket)
        s.sendall(b"GET /localapi/v0/status HTTP/1.1\r\nHost: loc")
        s.close()
    idle = [socket.socket(socket.AF_UNIX) for _ in range(10)]
    for s in idle:
        s.connect(helper.socket)
    try:
        still_serving(helper)
    finally:
        for s in idle:
            s.close()


def test_keep_alive_serves_several_requests_on_one_connection(helper):
    one = b"GET /localapi/v0/status HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n"
    last = b"GET /localapi/v0/prefs HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n"
    resp = raw(helper.socket, one + one + last)
    assert resp.count(b"HTTP/1.1 200 OK") == 3


def test_client_errors_are_typed(helper, shared_dir):
    async def t():
        c = LocalClient(helper.socket)
        with pytest.raises(LocalAPIError) as ei:
            await c.edit_prefs(MaskedPrefs.of(hostname="no_underscores"))
        assert ei.value.status == 400 and "invalid hostname" in ei.value.message
        with pytest.raises(HelperNotRunning, match="not running"):
            await LocalClient(str(shared_dir / "absent.sock")).status()

    asyncio.run(t())


def test_socket_mode_and_stale_socket_replacement(helper, shared_dir):
    st = os.stat(helper.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    # a live socket is never taken over
    with pytest.raises(SocketInUse):
        bind_unix_socket(helper.socket)
    # a non-socket file is never deleted
    f = shared_dir / "regular"
    f.write_text("keep me")
    with pytest.raises(SocketPathError):
        bind_unix_socket(str(f))
    assert f.read_text() == "keep me"
    # a stale socket (bound, nobody listening) is replaced
    stale = str(shared_dir / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    s2 = bind_unix_socket(stale)
    s2.close()


def test_second_helper_on_same_socket_refuses(helper, shared_dir):
    other = HelperProc(shared_dir)
    other.socket = helper.socket
    other.argv[other.argv.index("--socket") + 1] = helper.socket
    with pytest.raises(RuntimeError, match="exited rc=3"):
        other.start(timeout=10)
    assert "another helper is already serving" in other.log()
    still_serving(helper)


def test_sigterm_shuts_down_gracefully_and_removes_socket(shared_dir):
    h = HelperProc(shared_dir).start()
    watcher = socket.socket(socket.AF_UNIX)
    watcher.connect(h.socket)
    watcher.sendall(b"GET /localapi/v0/watch-ipn-bus?mask=2 HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n")
    time.sleep(0.3)
    assert h.stop() == 0
    assert not os.path.exists(h.socket)
    assert "shutting down" in h.log()
    # a watcher open at shutdown ends quietly: no traceback, no error line in the helper's log
    assert "Traceback" not in h.log() and " ERROR " not in h.log(), h.log()[-3000:]
    watcher.close()


def test_world_writable_socket_dir_is_refused(shared_dir):
    d = shared_dir / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(SocketPathError, match="world-writable"):
        bind_unix_socket(str(d / "s.sock"))
    os.chmod(d, 0o1777)  # sticky, like /tmp: acceptable
    bind_unix_socket(str(d / "s.sock")).close()
