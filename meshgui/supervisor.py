"""Finds, starts and restarts the privileged helper: systemd unit, pkexec'd wrapper, or a direct child when root.

Privilege boundary: the GUI never hands root a command line. With systemd it asks for
`systemctl start mesh-helper.service` (polkit: resources/polkit/50-meshvpn.rules); without, it runs
`pkexec /usr/libexec/meshvpn/mesh-helper-start`, a wrapper that takes no arguments.

    HELPER_DOWN seen ──► request_start() ──► strategy.start() ──► wait for the socket ──► up
                               ▲                                       │ fails
                               └──────── backoff 1 s, 2 s, 4 s … 30 s ◄┘

All process work is asyncio subprocesses (never blocks the GUI thread). After a restart the
app restores the user's last choices (see App._on_connected); `restart_pending` tells it when.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Sequence

UNIT = "mesh-helper.service"
DEFAULT_SOCKETS = ("/run/meshvpn/meshvpn.sock", "/var/run/meshvpn/meshvpn.sock")  # = engine.localapi.client
SOCKET_ENV = "MESHVPN_SOCKET"
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds between failed start attempts
READY_TIMEOUT = 15.0  # seconds for a started helper to answer on its socket
PKEXEC_WRAPPER = "/usr/libexec/meshvpn/mesh-helper-start"  # resources/polkit/mesh-helper-start


def find_socket(
    explicit: str | None = None, env: dict[str, str] | None = None, candidates: Sequence[str] = DEFAULT_SOCKETS
) -> str:
    """The socket to use: --socket, then $MESHVPN_SOCKET, then the first existing default, else the first default."""
    env = dict(os.environ if env is None else env)
    if explicit:
        return explicit
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV]
    for c in candidates:
        if os.path.exists(c):
            return c
    return candidates[0]


async def socket_answers(path: str, timeout: float = 2.0) -> bool:
    """True if something accepts connections on the Unix socket `path`."""
    try:
        async with asyncio.timeout(timeout):
            _, w = await asyncio.open_unix_connection(path)
    except (OSError, asyncio.TimeoutError):
        return False
    w.close()
    return True


def helper_command(socket_path: str) -> list[str]:
    """How to run the helper directly: the mesh-helper console script next to our interpreter, or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mesh-helper")
    exe = here if os.access(here, os.X_OK) else (shutil.which("mesh-helper") or "mesh-helper")
    return [exe, "serve", "--socket", socket_path]


class Strategy:
    """One way of starting the helper."""

    name = "strategy"

    async def available(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop what this strategy started (only direct children can be stopped by us)."""


async def _run(*argv: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "timed out"
    return proc.returncode or 0, out.decode(errors="replace").strip()


class SystemdUnit(Strategy):
    """systemctl start mesh-helper.service (polkit: no password for the meshvpn group, else admin's)."""

    name = "systemd"

    def __init__(self, unit: str = UNIT) -> None:
        self.unit = unit

    async def available(self) -> bool:
        if not shutil.which("systemctl") or not os.path.isdir("/run/systemd/system"):
            return False
        rc, out = await _run("systemctl", "show", "-p", "LoadState", "--value", self.unit, timeout=10)
        return rc == 0 and out == "loaded"

    async def start(self) -> None:
        rc, out = await _run("systemctl", "start", self.unit)
        if rc != 0:
            raise StartFailed(f"systemctl start {self.unit} failed: {out or rc}")


class Pkexec(Strategy):
    """pkexec <argument-less wrapper>: one-shot elevation through the desktop's polkit agent (no systemd).

    Only the installed wrapper is ever run: never the helper itself with arguments, which would make
    the polkit authorisation a root shell (any --journal/--state the caller likes).
    """

    name = "pkexec"

    def __init__(self, wrapper: str = PKEXEC_WRAPPER) -> None:
        self.wrapper = wrapper
        self.proc: asyncio.subprocess.Process | None = None

    async def available(self) -> bool:
        return os.geteuid() != 0 and shutil.which("pkexec") is not None and _root_owned_program(self.wrapper)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "pkexec",
            self.wrapper,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await asyncio.sleep(0.2)
        if self.proc.returncode in (126, 127):
            raise StartFailed("Starting the helper was not authorised (pkexec).")


def _root_owned_program(path: str) -> bool:
    """An installed program: a root-owned executable nobody else can write."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == 0 and not st.st_mode & 0o022 and os.access(path, os.X_OK)


class Direct(Strategy):
    """Run the helper as our child (only sensible when we are root, or in tests with a custom command)."""

    name = "direct"

    def __init__(self, command: Sequence[str], *, require_root: bool = True, env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.require_root = require_root
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def available(self) -> bool:
        return (not self.require_root or os.geteuid() == 0) and bool(self.command)

    async def start(self) -> None:
        if self.proc is not None and self.proc.returncode is None and _alive(self.proc.pid):
            return  # still running (just not answering yet)
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _alive(pid: int) -> bool:
    """True unless `pid` has exited (gone or a zombie); asyncio may not have reaped it yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not os.path.isdir("/proc")  # no /proc entry on Linux means gone


class StartFailed(Exception):
    """A strategy could not start the helper."""


@dataclass
class SupervisorStatus:
    starts: int = 0
    failures: int = 0
    last_error: str = ""
    strategy: str = ""
    history: list[str] = field(default_factory=list)


class Supervisor:
    """Keeps the helper running: start on demand, restart with backoff, remember that a restart happened."""

    def __init__(
        self,
        socket_path: str,
        strategies: Sequence[Strategy],
        *,
        logger: logging.Logger | None = None,
        backoff: Sequence[float] = BACKOFF,
        ready_timeout: float = READY_TIMEOUT,
        auto_restart: bool = True,
    ) -> None:
        self.socket_path = socket_path
        self.strategies = list(strategies)
        self.status = SupervisorStatus()
        self.auto_restart = auto_restart
        self._log = logger or logging.getLogger("meshgui.supervisor")
        self._backoff = tuple(backoff)
        self._ready_timeout = ready_timeout
        self._wanted = asyncio.Event()
        self._stop = asyncio.Event()
        self._restarted = False
        self._active: Strategy | None = None

    def request_start(self) -> None:
        """Ask for the helper to be (re)started; idempotent while an attempt is running."""
        if not self._wanted.is_set():
            self._log.debug("helper start requested")
        self._wanted.set()

    @property
    def restart_pending(self) -> bool:
        """True after we (re)started the helper until ack_restart(): the app then restores the user's choices."""
        return self._restarted

    def ack_restart(self) -> None:
        """The user's choices were restored on the restarted helper."""
        self._restarted = False

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()

    async def aclose(self) -> None:
        """Stop a helper we run as a direct child (systemd/pkexec helpers keep running)."""
        self.stop()
        for s in self.strategies:
            await s.stop()

    async def run(self) -> None:
        """Serve start requests until stop()."""
        attempt = 0
        while True:
            await self._wanted.wait()
            if self._stop.is_set():
                return
            if await socket_answers(self.socket_path):
                self._log.debug("helper answers on %s: nothing to start", self.socket_path)
                self._wanted.clear()
                attempt = 0
                continue
            ok = await self.start_once()
            if ok:
                self._wanted.clear()
                attempt = 0
                continue
            delay = self._backoff[min(attempt, len(self._backoff) - 1)]
            attempt += 1
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return
            except asyncio.TimeoutError:
                pass

    async def start_once(self) -> bool:
        """Try each available strategy once; True when the socket answers."""
        errors = []
        for strategy in self.strategies:
            try:
                if not await strategy.available():
                    continue
                self._log.info("starting the helper via %s", strategy.name)
                self.status.history.append(strategy.name)
                # Mark before starting: the bridge may reconnect before _wait_ready() sees the socket.
                self._restarted = True
                await strategy.start()
                if await self._wait_ready():
                    self.status.starts += 1
                    self.status.strategy = strategy.name
                    self.status.last_error = ""
                    self._active = strategy
                    return True
                errors.append(f"{strategy.name}: the helper did not open {self.socket_path}")
            except (StartFailed, OSError) as e:
                errors.append(f"{strategy.name}: {e}")
        self.status.failures += 1
        self.status.last_error = "; ".join(errors) or "no way to start the helper is available here"
        self._log.warning("could not start the helper: %s", self.status.last_error)
        return False

    async def _wait_ready(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while loop.time() < deadline:
            if await socket_answers(self.socket_path, timeout=1.0):
                return True
            await asyncio.sleep(0.1)
        return False


def default_strategies(socket_path: str, command: Sequence[str] | None = None) -> list[Strategy]:
    """systemd unit, else pkexec of the argument-less wrapper, else (when we are root) a direct child."""
    cmd = list(command) if command else helper_command(socket_path)
    return [SystemdUnit(), Pkexec(), Direct(cmd)]
