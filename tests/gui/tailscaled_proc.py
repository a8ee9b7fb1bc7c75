"""Runs a real tailscaled (userspace networking) in a fresh network namespace with only lo up, for GUI lab tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Iterator

from tests.lab.netlab import stop_process

PEER_BIN = os.environ.get("MESH_PEER_BIN", "/var/cache/meshvpn-peers/bin")


def tailscaled_path() -> str:
    return os.path.join(PEER_BIN, "tailscaled")


@contextlib.contextmanager
def tailscaled_in_netns(timeout: float = 30.0) -> Iterator[str]:
    """Yield the LocalAPI socket path of a tailscaled sitting in NeedsLogin; kill it and clean up after."""
    work = tempfile.mkdtemp(prefix="meshgui-ts-")
    os.chmod(work, 0o755)  # so a non-root test client can reach the (0666) socket
    sock = os.path.join(work, "tailscaled.sock")
    env = dict(os.environ, TS_NO_LOGS_NO_SUPPORT="1", TS_DISABLE_PORTMAPPER="1")
    script = ('ip link set lo up && exec "$0" --tun=userspace-networking --socket="$1" '
              '--statedir="$2" --port=0')
    log = open(os.path.join(work, "tailscaled.log"), "wb")
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", script, tailscaled_path(), sock,
                             os.path.join(work, "state")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("tailscaled did not start: " + open(log.name, errors="replace").read()[-2000:])
            time.sleep(0.05)
        yield sock
    finally:
        stop_process(proc, 15)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
