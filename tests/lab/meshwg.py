"""Lab runner for our own userspace WireGuard engine (`mesh-helper wg`), with the same surface as peers.WireguardGo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.lab.netlab import REPO_ROOT, Host, LabError, wait_ready
from tests.lab.peers import WgInterface, WgKeyPair, wait_for_socket

WG_QUICK_SHIM = REPO_ROOT / "engine" / "dataplane" / "wg-quick-userspace"
MESH_HELPER = Path(sys.executable).with_name("mesh-helper")


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the engine from this checkout inside a lab host."""
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_HELPER": str(MESH_HELPER)}
    env.update(extra or {})
    return env


class MeshWg(WgInterface):
    """`mesh-helper wg --config ... --foreground` on `ifname` inside `host`.

    `env` may carry MESH_WG_* overrides (e.g. MESH_WG_REKEY_AFTER_TIME).
    """

    def __init__(
        self,
        host: Host,
        ifname: str,
        keys: WgKeyPair | None = None,
        *,
        listen_port: int | None = None,
        address: str | None = None,
        address6: str | None = None,
        mtu: int = 1420,
        env: dict[str, str] | None = None,
        extra_config: str = "",
        log_level: str = "info",
    ):
        super().__init__(
            host,
            ifname,
            keys,
            listen_port=listen_port,
            address=address,
            address6=address6,
            mtu=mtu,
            log_level=log_level,
        )
        self.env = env or {}
        self.extra_config = extra_config
        self.config_path = host.lab.dir / f"{ifname}.conf"

    def write_config(self) -> Path:
        lines = ["[Interface]", f"PrivateKey = {self.keys.private}", f"MTU = {self.mtu}"]
        if self.listen_port is not None:
            lines.append(f"ListenPort = {self.listen_port}")
        for a in (self.address, self.address6):
            if a:
                lines.append(f"Address = {a}")
        text = "\n".join(lines) + "\n" + self.extra_config
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return self.config_path

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "engine.cli.helper",
            "wg",
            "--config",
            str(self.config_path),
            "--interface",
            self.ifname,
            "--foreground",
            "--log-level",
            self.log_level,
        ]

    def start(self, timeout: float = 20) -> "MeshWg":
        self.write_config()
        self.proc = self.host.popen(self.argv(), env=engine_env(self.env))
        self.host.lab.add_cleanup(self.stop)
        wait_for_socket(self.ifname, timeout=timeout, proc=self.proc)
        # The socket may be a stale one from a killed run: wait until wg(8) gets an answer.
        wait_ready(
            lambda: self.host.run([self.wg.wg, "show", self.ifname], check=False).returncode == 0,
            what=f"engine {self.ifname}",
            until="wg show answers on its UAPI socket",
            proc=self.proc,
            timeout=timeout,
            log=self.log,
        )
        return self

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Send `sig` and wait; returns the exit status (None if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise LabError(
                f"engine {self.ifname} did not stop within {timeout}s on signal {sig}:\n{self.log()[-3000:]}"
            )

    def link_exists(self) -> bool:
        return self.host.run(["ip", "link", "show", "dev", self.ifname], check=False).returncode == 0


__all__ = ["MeshWg", "engine_env", "WG_QUICK_SHIM", "MESH_HELPER"]
