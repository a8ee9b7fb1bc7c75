"""Node kinds for the NAT matrix: one interface (start/wait_running/ip/ping/path_to/stop), tailscaled and ours.

A matrix cell pairs two nodes of any kinds (tailscaled<->tailscaled, ours<->ours,
ours<->tailscaled). The matrix runner only talks to this interface,
so adding a kind is: subclass `NodeKind`, register it in `NODE_KINDS`.

Path semantics (what `path_to` returns, from this node's view of `peer`):
  ("direct", "ip:port")  traffic to the peer goes over UDP to that endpoint only
  ("derp",   "<region>") traffic goes through DERP (the peer's home region code)
  ("none",   "")         the peer is not (yet) in this node's netmap
"""

from __future__ import annotations

import abc
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, NamedTuple

from tests.lab.netlab import REPO_ROOT, Host, LabError, stop_process
from tests.lab.tailscaled import Tailscaled
from tests.natmatrix import localapi

_RTT = re.compile(r"time=([0-9.]+) ms")


def _write_secret(path: Path, secret: str) -> Path:
    """Write `secret` to a new 0600 file (for "file:" auth-key arguments); returns the path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret.encode())
    finally:
        os.close(fd)
    return path


class PathInfo(NamedTuple):
    """("direct", "ip:port") | ("derp", region code) | ("none", "")."""

    kind: str
    where: str


NO_PATH = PathInfo("none", "")


class NodeKind(abc.ABC):
    """One mesh node inside a lab host; subclasses implement the lifecycle and status reading."""

    kind: ClassVar[str] = "?"
    available: ClassVar[bool] = True  # False until the kind can really run (matrix rows then show "pending")

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname  # the node's name in the tailnet
        self.host: Host | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @abc.abstractmethod
    def start(self, host: Host, login_server: str, auth_key: str) -> None:
        """Start the node in `host` and begin joining `login_server` with `auth_key` (never logged)."""

    @abc.abstractmethod
    def wait_running(self, timeout: float = 60.0) -> None:
        """Block until the node is logged in, has its tailnet address and its TUN is up (LabError on timeout)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the node (idempotent); the lab tears down its namespace afterwards anyway."""

    # -- status ---------------------------------------------------------------------------
    @abc.abstractmethod
    def ip(self) -> str:
        """This node's tailnet IPv4 address."""

    @abc.abstractmethod
    def knows(self, peer_ip: str) -> bool:
        """Whether the node's netmap has a peer with tailnet address `peer_ip`."""

    @abc.abstractmethod
    def path_to(self, peer: "NodeKind") -> PathInfo:
        """The path this node currently uses to send to `peer` (see the module docstring)."""

    def log(self) -> str:
        return ""

    # -- traffic --------------------------------------------------------------------------
    def ping(self, peer_ip: str, timeout: float = 2.0) -> float | None:
        """One ICMP echo through the tunnel (kernel ping in this node's namespace); RTT in ms or None."""
        assert self.host is not None, "start() first"
        p = self.host.run(
            ["ping", "-n", "-c", "1", "-W", str(max(1, int(timeout))), peer_ip], check=False, timeout=timeout + 5
        )
        m = _RTT.search(p.stdout)
        return float(m.group(1)) if p.returncode == 0 and m else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hostname!r})"


class LocalApiNode(NodeKind):
    """A node whose state is read from a tailscaled-compatible LocalAPI (`GET /localapi/v0/status`)."""

    socket_path: Path | None = None

    def status(self, timeout: float = 5.0) -> dict:
        if self.socket_path is None:
            raise LabError(f"{self!r}: not started")
        return localapi.status(str(self.socket_path), timeout)

    def wait_running(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                st = self.status()
                last = st.get("BackendState")
                if last == "Running" and (st.get("Self") or {}).get("TailscaleIPs"):
                    return
            except (OSError, ValueError) as e:
                last = e
            if time.monotonic() > deadline:
                raise LabError(f"{self!r} not Running after {timeout}s (last: {last}): {self.log()[-2000:]}")
            time.sleep(0.2)

    def ip(self) -> str:
        for a in (self.status().get("Self") or {}).get("TailscaleIPs") or []:
            if ":" not in a:
                return a
        raise LabError(f"{self!r} has no tailnet IPv4 address")

    def _peer(self, st: dict, peer_ip: str) -> dict | None:
        for p in (st.get("Peer") or {}).values():
            if peer_ip in (p.get("TailscaleIPs") or []):
                return p
        return None

    def knows(self, peer_ip: str) -> bool:
        return self._peer(self.status(), peer_ip) is not None

    def path_to(self, peer: NodeKind) -> PathInfo:
        p = self._peer(self.status(), peer.ip())
        if p is None:
            return NO_PATH
        # CurAddr is set only while a trusted direct UDP path is used without DERP.
        if p.get("CurAddr"):
            return PathInfo("direct", p["CurAddr"])
        if p.get("Relay"):
            return PathInfo("derp", p["Relay"])
        return NO_PATH


class TailscaledNode(LocalApiNode):
    """A real tailscaled in TUN mode (tests/lab/tailscaled.py), read through its LocalAPI socket."""

    kind = "tailscaled"

    def __init__(self, hostname: str) -> None:
        super().__init__(hostname)
        self.ts: Tailscaled | None = None
        self._ip: str | None = None

    def start(self, host: Host, login_server: str, auth_key: str) -> None:
        self.host = host
        self.ts = Tailscaled(host).start()
        self.socket_path = self.ts.socket
        # `tailscale up` returns once the node is Running (or fails with the CLI's message).
        # Tailscaled.up passes the key through its own 0600 file ("file:" form), so it is
        # neither in argv (ps) nor in the command line a LabError would print.
        self.ts.up(login_server, auth_key, self.hostname, timeout=60)

    def ip(self) -> str:
        if self._ip is None:  # fixed for the node's lifetime; saves a LocalAPI round trip per poll
            self._ip = super().ip()
        return self._ip

    def log(self) -> str:
        return self.ts.log() if self.ts else ""

    def stop(self) -> None:
        if self.ts is not None:
            self.ts.stop()


class OurNode(LocalApiNode):
    """Our own node: ``mesh-helper serve`` (LocalAPI) + ``meshctl up``, read through our LocalAPI.

    * ``start``: ``mesh-helper serve --socket <lab dir>/ours-<host>.sock --journal <lab dir>/...
      --tun mesh0`` inside ``host`` (with ``MESH_DEBUG_USE_DERP_HTTP=1``: headscale's embedded DERP
      is plain HTTP here, as tailscaled's TS_DEBUG_USE_DERP_HTTP=1); wait for "mesh-helper ready";
      then ``meshctl --socket S up --login-server URL --auth-key file:<0600 file> --hostname H``
      (meshctl runs in the test's namespace: the LocalAPI is a Unix socket; the key never
      reaches argv or logs).
    * the path comes from ``GET /localapi/v0/status`` (LocalApiNode): per ``Peer`` ``CurAddr``
      ("ip:port" while magicsock's direct path is trusted, engine/wgengine/transport.py) and ``Relay``
      (the peer's home DERP region code, "lab").
    * MESH_NATMATRIX_OURS=0 turns the ours rows off (they then show as "pending").
    """

    kind = "ours"
    available = os.environ.get("MESH_NATMATRIX_OURS", "1") == "1"  # MESH_NATMATRIX_OURS=0 skips our rows

    def __init__(self, hostname: str) -> None:
        super().__init__(hostname)
        self.proc: subprocess.Popen | None = None

    def start(self, host: Host, login_server: str, auth_key: str) -> None:
        self.host = host
        d = host.lab.dir
        self.socket_path = d / f"ours-{host.name}.sock"
        self.proc = host.popen_python(
            "engine.cli.helper",
            "serve",
            "--socket",
            str(self.socket_path),
            "--journal",
            str(d / f"ours-{host.name}.journal"),
            "--tun",
            "mesh0",
            "-v",
            module=True,
            env={"MESH_TESTING": "1", "MESH_DEBUG_USE_DERP_HTTP": "1"},
        )
        host.lab.add_cleanup(self.stop)
        deadline = time.monotonic() + 30
        while "mesh-helper ready" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{self!r}: helper did not become ready: {self.log()[-2000:]}")
            time.sleep(0.1)
        key_file = _write_secret(d / f"ours-{host.name}.authkey", auth_key)
        try:
            p = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "engine.cli.meshctl",
                    "--socket",
                    str(self.socket_path),
                    "up",
                    "--login-server",
                    login_server,
                    "--auth-key",
                    f"file:{key_file}",
                    "--hostname",
                    self.hostname,
                    "--timeout",
                    "60",
                ],
                capture_output=True,
                text=True,
                timeout=90,
                cwd="/tmp",
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "MESH_TESTING": "1"},
            )
        finally:
            key_file.unlink(missing_ok=True)  # never left behind for log/artifact copies
        if p.returncode != 0:
            raise LabError(f"{self!r}: meshctl up rc={p.returncode}: {p.stderr.strip()[-1000:]}")

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    def stop(self) -> None:
        stop_process(self.proc, 15)


NODE_KINDS: dict[str, type[NodeKind]] = {"tailscaled": TailscaledNode, "ours": OurNode}

__all__ = ["NodeKind", "LocalApiNode", "TailscaledNode", "OurNode", "PathInfo", "NO_PATH", "NODE_KINDS"]
