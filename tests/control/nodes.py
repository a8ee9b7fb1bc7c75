"""Lab helpers for control tests: run our headless node (mesh-helper) in a lab host and read its status file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Callable

from tests.lab.netlab import Host, LabError


class OurNode:
    """`python -m engine.cli.helper --login-server ... --status-file ...` inside ``host``."""

    def __init__(self, host: Host, login_server: str, *, auth_key: str | None = None, hostname: str | None = None,
                 port: int = 41641, watchdog: float | None = None, tun: str = "mesh0",
                 extra_args: tuple[str, ...] = ()) -> None:
        self.extra_args = tuple(extra_args)
        self.host = host
        self.login_server = login_server
        self.auth_key = auth_key
        self.hostname = hostname or f"py-{host.name}"
        self.port = port
        self.watchdog = watchdog
        self.tun = tun
        self.state = host.lab.dir / f"{host.name}.state"
        self.status_path = host.lab.dir / f"{host.name}.status.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "OurNode":
        args = ["--login-server", self.login_server, "--state", str(self.state), "--hostname", self.hostname,
                "--tun", self.tun, "--port", str(self.port), "--status-file", str(self.status_path),
                "--endpoint-interval", "2"]
        env: dict[str, str] = {}
        if self.auth_key:
            # a 0600 file: never on the command line (every local user sees argv in `ps`)
            key_file = self.host.lab.dir / f"{self.host.name}.authkey"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.auth_key)
            args += ["--auth-key", f"file:{key_file}"]
        if self.watchdog:
            args += ["--watchdog", str(self.watchdog)]
        self.proc = self.host.popen_python("engine.cli.helper", *args, *self.extra_args, module=True, env=env)
        self.host.lab.add_cleanup(self.stop)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait(self, pred: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st and pred(st):
                return st
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"{self.hostname} exited rc={self.proc.returncode} waiting for {what}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.hostname}: timed out waiting for {what}; status={json.dumps(st)[:1500]}\n"
                               f"log:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def wait_synced(self, npeers: int | None = None, timeout: float = 30) -> dict:
        return self.wait(lambda s: s.get("State") == "synced" and s.get("InMapPoll")
                         and (npeers is None or len(s.get("Peers", [])) == npeers),
                         f"synced with {npeers} peers", timeout)

    def peer(self, name_prefix: str) -> dict | None:
        for p in self.status().get("Peers", []):
            if p["Name"].split(".")[0] == name_prefix:
                return p
        return None

    @property
    def ip(self) -> str:
        return self.status()["Self"]["Addresses"][0].split("/")[0]


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(interval)


TCP_SERVER = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
data = b""
while not data.endswith(b"\n"):
    d = c.recv(65536)
    if not d: break
    data += d
c.sendall(b"echo:" + data)
c.close()
'''

TCP_CLIENT = r'''
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"x" * 100000 + b"\n")
buf = b""
while True:
    d = c.recv(65536)
    if not d: break
    buf += d
print(len(buf), buf[:5].decode())
'''
