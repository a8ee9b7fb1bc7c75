"""A fake helper LocalAPI on a Unix socket for GUI tests (tailscaled's JSON shapes; HTTP/1.1, chunked watch stream).

Serves: status, prefs (GET/PATCH MaskedPrefs), start, login-interactive (answers on the bus with
BrowseToURL, then Running once `complete_login()` is called), logout, ping, watch-ipn-bus,
meshvpn/keys. `read_only=True` makes every write answer 403 like tailscaled for a non-operator.
Runs its own asyncio loop in a thread so it works beside any GUI loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import urllib.parse
from typing import Any

from tests.gui.builders import prefs as make_prefs, status as make_status

STATE_NUM = {
    "NoState": 0,
    "InUseOtherUser": 1,
    "NeedsLogin": 2,
    "NeedsMachineAuth": 3,
    "Stopped": 4,
    "Starting": 5,
    "Running": 6,
}


class FakeLocalAPI:
    def __init__(
        self, path: str, *, backend: str = "NeedsLogin", peers=(), read_only: bool = False, keys_endpoint: bool = True
    ) -> None:
        self.path = path
        self.status = make_status(backend, list(peers))
        self.prefs = make_prefs(WantRunning=backend == "Running", LoggedOut=backend == "NeedsLogin")
        self.read_only = read_only
        self.keys_endpoint = keys_endpoint
        self.requests: list[tuple[str, str]] = []
        self.received_keys: list[dict] = []
        self.login_url = "http://127.0.0.1:9/login/abc123"
        self._watchers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-localapi")

    # ------------------------------------------------------------ control (any thread)

    def __enter__(self) -> "FakeLocalAPI":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def call(self, fn, *args) -> Any:
        async def wrap():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(10)

    def set_backend(self, backend: str) -> None:
        self.call(self._set_backend, backend)

    def set_status(self, status: dict) -> None:
        def do():
            self.status = copy.deepcopy(status)
            self._broadcast({"State": STATE_NUM[self.status["BackendState"]], "Engine": {"RBytes": 0}})

        self.call(do)

    def complete_login(self) -> None:
        def do():
            self.prefs["LoggedOut"] = False
            self.prefs["WantRunning"] = True
            self._broadcast({"LoginFinished": {}})
            self._set_backend("Running")

        self.call(do)

    def push(self, notify: dict) -> None:
        self.call(self._broadcast, notify)

    # ------------------------------------------------------------ server

    async def _start(self) -> None:
        import os
        import socket

        if os.path.exists(self.path):  # a crashed predecessor's socket: remove it only if nobody answers
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)
            finally:
                probe.close()
        self._server = await asyncio.start_unix_server(self._handle, self.path)

    async def _stop(self) -> None:
        for w in self._watchers:
            w.close()
        self._watchers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _set_backend(self, backend: str) -> None:
        self.status["BackendState"] = backend
        self._broadcast({"State": STATE_NUM[backend], "Prefs": self.prefs})

    def _broadcast(self, fields: dict) -> None:
        n = {"Version": "fake"}
        n.update(fields)
        line = json.dumps(n).encode() + b"\n"
        for w in list(self._watchers):
            try:
                w.write(b"%x\r\n%s\r\n" % (len(line), line))
            except (ConnectionError, RuntimeError):
                self._watchers.remove(w)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            w.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await r.readexactly(int(headers.get("content-length", "0") or 0))
        url = urllib.parse.urlsplit(target)
        self.requests.append((method, url.path))
        if url.path == "/localapi/v0/watch-ipn-bus":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            self._watchers.append(w)
            first = {"Version": "fake", "State": STATE_NUM[self.status["BackendState"]], "Prefs": self.prefs}
            line = json.dumps(first).encode() + b"\n"
            w.write(b"%x\r\n%s\r\n" % (len(line), line))
            return  # kept open; closed by _stop
        code, obj = self._route(method, url.path, urllib.parse.parse_qs(url.query), body)
        data = b"" if obj is None else json.dumps(obj).encode()
        reason = {200: "OK", 204: "No Content", 403: "Forbidden", 404: "Not Found"}.get(code, "X")
        w.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Length: {len(data)}\r\nContent-Type: application/json"
            f"\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await w.drain()
        w.close()

    def _route(self, method: str, path: str, q: dict, body: bytes) -> tuple[int, Any]:
        write = method in ("POST", "PATCH", "PUT", "DELETE")
        if write and self.read_only and path != "/localapi/v0/ping":
            return 403, {"error": "access denied"}
        if path == "/localapi/v0/status":
            return 200, self.status
        if path == "/localapi/v0/prefs":
            if method == "PATCH":
                mp = json.loads(body or b"{}")
                for k, v in mp.items():
                    if k.endswith("Set") and v is True and k[:-3] in mp:
                        self.prefs[k[:-3]] = mp[k[:-3]]
                if mp.get("WantRunningSet") and self.status["BackendState"] in ("Running", "Stopped"):
                    self.status["BackendState"] = "Running" if self.prefs["WantRunning"] else "Stopped"
                if mp.get("ExitNodeIDSet"):
                    self.status.pop("ExitNodeStatus", None)
                    if self.prefs.get("ExitNodeID"):
                        self.status["ExitNodeStatus"] = {"ID": self.prefs["ExitNodeID"], "Online": True}
                self._broadcast({"Prefs": self.prefs, "State": STATE_NUM[self.status["BackendState"]]})
            return 200, self.prefs
        if path == "/localapi/v0/start":
            opts = json.loads(body or b"{}")
            if isinstance(opts.get("UpdatePrefs"), dict):
                self.prefs.update(opts["UpdatePrefs"])
            return 204, None
        if path == "/localapi/v0/login-interactive":
            self._loop.call_later(0.05, self._broadcast, {"BrowseToURL": self.login_url})
            return 204, None
        if path == "/localapi/v0/logout":
            self.prefs["LoggedOut"] = True
            self._set_backend("NeedsLogin")
            return 204, None
        if path == "/localapi/v0/ping":
            ip = q.get("ip", [""])[0]
            return 200, {"IP": ip, "LatencySeconds": 0.003, "Endpoint": "192.0.2.10:41641"}
        if path == "/localapi/v0/meshvpn/keys" and self.keys_endpoint:
            self.received_keys.append(json.loads(body))
            return 200, {"MachinePublic": "mkey:" + "0" * 64, "NodePublic": "nodekey:" + "0" * 64, "Source": "gui"}
        return 404, {"error": "not found"}
