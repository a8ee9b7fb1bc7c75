"""Runs our own helper (`mesh-helper serve --engine fake`: real LocalAPI server and IPN backend, canned engine) for GUI tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from tests.lab.netlab import stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def helper_argv(sock: str, work: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli.helper", "serve", "--engine", "fake", "--socket", sock,
            "--prefs", os.path.join(work, "prefs.json"), "--journal", os.path.join(work, "journal")]


@contextlib.contextmanager
def our_helper(timeout: float = 30.0) -> Iterator[str]:
    """Yield the socket of a running helper (fake engine); stop it and clean up after."""
    work = tempfile.mkdtemp(prefix="meshgui-helper-")
    os.chmod(work, 0o755)
    sock = os.path.join(work, "meshvpn.sock")
    log = open(os.path.join(work, "helper.log"), "wb")
    env = dict(os.environ, MESH_TESTING="1", PYTHONPATH=ROOT)
    proc = subprocess.Popen(helper_argv(sock, work), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("helper did not start: " + open(log.name, errors="replace").read()[-2000:])
            time.sleep(0.05)
        yield sock
    finally:
        stop_process(proc, 15)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
