"""Child processes that serve a Unix socket for GUI tests: start one, wait for its socket, stop it and clean up."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from tests.lab.netlab import stop_process


def wait_for_socket(proc: subprocess.Popen, sock: str, log_path: str, what: str, timeout: float = 30.0) -> None:
    """Return once `sock` exists; RuntimeError with the end of the child's log if it exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: " + Path(log_path).read_text(errors="replace")[-2000:])
        time.sleep(0.05)


@contextlib.contextmanager
def serving(
    argv: Callable[[str, str], list[str]],
    *,
    what: str,
    prefix: str,
    sock_name: str,
    env: dict[str, str],
    cwd: str | None = None,
    timeout: float = 30.0,
) -> Iterator[str]:
    """Run `argv(sock, work)` in a fresh work directory, output in `<what>.log` there; yield the socket once it exists.

    The directory is world-readable so that a non-root test client can reach the socket; the child
    (its own session) is stopped and the directory removed afterwards.
    """
    work = tempfile.mkdtemp(prefix=prefix)
    os.chmod(work, 0o755)
    sock = os.path.join(work, sock_name)
    log_path = os.path.join(work, f"{what}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv(sock, work), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_socket(proc, sock, log_path, what, timeout)
        yield sock
    finally:
        stop_process(proc, 15)
        shutil.rmtree(work, ignore_errors=True)
