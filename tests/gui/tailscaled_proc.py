"""Runs a real tailscaled (userspace networking) in a fresh network namespace with only lo up, for GUI lab tests."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from tests.gui.sockproc import serving

PEER_BIN = os.environ.get("MESH_PEER_BIN", "/var/cache/meshvpn-peers/bin")


def tailscaled_path() -> str:
    return os.path.join(PEER_BIN, "tailscaled")


def _argv(sock: str, work: str) -> list[str]:
    script = 'ip link set lo up && exec "$0" --tun=userspace-networking --socket="$1" --statedir="$2" --port=0'
    return ["unshare", "-n", "sh", "-c", script, tailscaled_path(), sock, os.path.join(work, "state")]


@contextlib.contextmanager
def tailscaled_in_netns(timeout: float = 30.0) -> Iterator[str]:
    """Yield the LocalAPI socket path of a tailscaled sitting in NeedsLogin; kill it and clean up after."""
    env = dict(os.environ, TS_NO_LOGS_NO_SUPPORT="1", TS_DISABLE_PORTMAPPER="1")
    with serving(
        _argv, what="tailscaled", prefix="meshgui-ts-", sock_name="tailscaled.sock", env=env, timeout=timeout
    ) as sock:
        yield sock
