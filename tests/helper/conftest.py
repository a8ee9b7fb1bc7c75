"""Fixtures for helper tests: a running helper with the fake engine (tests.support.fake_helper), users, tailscaled."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.lab.fixtures import lab  # noqa: F401  (re-exported fixture)

REPO = Path(__file__).resolve().parents[2]
PEER_BIN = Path(os.environ.get("MESH_PEER_BIN", "/var/cache/meshvpn-peers/bin"))
TAILSCALE = PEER_BIN / "tailscale"
TAILSCALED = PEER_BIN / "tailscaled"


def helper_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "MESH_TESTING": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


class HelperProc:
    """A `mesh-helper serve` subprocess with the fake engine (tests.support.fake_helper) on a private socket + journal.

    Extra args are serve flags or the fake helper's own (--manual-login, --fake-system).
    """

    def __init__(self, workdir: Path, *args: str, wrap: list[str] | None = None) -> None:
        self.dir = workdir
        self.socket = str(workdir / "helper.sock")
        self.journal = str(workdir / "changes.jsonl")
        self.log_path = workdir / f"helper-{uuid.uuid4().hex[:6]}.log"
        self.argv = [
            *(wrap or []),
            sys.executable,
            "-m",
            "tests.support.fake_helper",
            "serve",
            "--socket",
            self.socket,
            "--journal",
            self.journal,
            "-v",
            *args,
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> "HelperProc":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, env=helper_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while "mesh-helper ready" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"helper exited rc={self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"helper not ready:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        rc = self.proc.returncode
        self.proc = None
        return rc


@pytest.fixture
def shared_dir():
    """A temp dir other local users can traverse (0755), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="meshvpn-helper-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture
def helper(shared_dir, request):
    """A running helper with the fake engine (auto-login). Extra args via @pytest.mark.helper_args(...)."""
    m = request.node.get_closest_marker("helper_args")
    h = HelperProc(shared_dir, *(m.args if m else ()))
    h.start()
    try:
        yield h
    finally:
        rc = h.stop()
        if rc not in (0, None):
            print(h.log()[-3000:])


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "helper_args(*args): extra serve args (or --manual-login, --fake-system) for the helper fixture"
    )


class TempUser:
    def __init__(self, name: str, group: str | None = None) -> None:
        self.name = name
        self.group = group

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.name).pw_uid

    def argv(self, *cmd: str) -> list[str]:
        return ["setpriv", f"--reuid={self.name}", f"--regid={pwd.getpwnam(self.name).pw_gid}", "--init-groups", *cmd]

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*cmd), env=helper_env(), cwd="/tmp", capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture
def make_user():
    """Creates throwaway system users (and groups); deletes them afterwards, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("creating users needs root")
    made: list[str] = []
    groups: list[str] = []

    def make(group: str | None = None) -> TempUser:
        name = f"mvt{os.getpid() % 100000}{len(made)}"
        cmd = ["useradd", "-M", "-r", "-s", "/usr/sbin/nologin"]
        if group:
            if group not in groups:
                subprocess.run(["groupadd", "-r", group], check=True, capture_output=True)
                groups.append(group)
            cmd += ["-G", group]
        subprocess.run([*cmd, name], check=True, capture_output=True)
        made.append(name)
        return TempUser(name, group)

    try:
        yield make
    finally:
        for n in made:
            subprocess.run(["userdel", n], check=False, capture_output=True)
        for g in groups:
            subprocess.run(["groupdel", g], check=False, capture_output=True)


def tailscale_cli(
    sock: str, *args: str, timeout: float = 30, user: TempUser | None = None
) -> subprocess.CompletedProcess:
    argv = [str(TAILSCALE), f"--socket={sock}", *args]
    if user is not None:
        argv = user.argv(*argv)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/tmp",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"},
    )


def meshctl(sock: str, *args: str, timeout: float = 30, user: TempUser | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "engine.cli.meshctl", "--socket", sock, *args]
    if user is not None:
        return user.run(*argv, timeout=timeout)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/tmp", env=helper_env())
