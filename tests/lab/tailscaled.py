"""tailscaled runner for lab tests: TUN mode in a lab namespace, own statedir/socket, `tailscale up`, status --json."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

from tests.lab.netlab import Host, stop_process, wait_ready
from tests.lab.peers import peer_bin

ENV = {
    "TS_DEBUG_USE_DERP_HTTP": "1",  # headscale's embedded DERP is plain HTTP in the lab
    "TS_DISABLE_PORTMAPPER": "1",  # never probe a gateway
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_ASSUME_NETWORK_UP_FOR_TEST": "1",
}


class Tailscaled:
    """A real tailscaled (TUN ``tun``) inside ``host``; CLI via ``tailscale --socket``."""

    def __init__(
        self,
        host: Host,
        *,
        tun: str = "tailscale0",
        port: int = 41641,
        verbose: int = 0,
        extra_env: dict[str, str] | None = None,
        resolv_conf: str | None = None,
    ) -> None:
        """``resolv_conf``: run with a private overlay on /etc holding this resolv.conf (for `--accept-dns`).

        tailscaled's direct DNS mode renames /etc/resolv.conf to a backup beside it; under `ip netns
        exec` with /etc/netns/<ns>/resolv.conf the rename fails (a bind mount), the backup would land
        in the machine's own /etc and later DNS updates fail. The overlay (own mount namespace, upper
        layer in the lab directory) keeps every write inside the lab.
        """
        self.host = host
        self.resolv_conf = resolv_conf
        self.tun = tun
        self.port = port
        self.dir = host.lab.dir / f"tailscaled-{host.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "tailscaled.sock"
        self.env = {**ENV, **(extra_env or {})}
        self.verbose = verbose
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "Tailscaled":
        argv = [
            peer_bin("tailscaled"),
            f"--statedir={self.dir}",
            f"--socket={self.socket}",
            f"--tun={self.tun}",
            f"--port={self.port}",
            "--no-logs-no-support",
        ]
        if self.verbose:
            argv.append(f"--verbose={self.verbose}")
        if self.resolv_conf is not None:
            upper, work = self.dir / "etc-upper", self.dir / "etc-work"
            upper.mkdir(exist_ok=True)
            work.mkdir(exist_ok=True)
            (upper / "resolv.conf").write_text(self.resolv_conf)
            script = (
                f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc && "
                f"exec {shlex.join(argv)}"
            )
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        self.proc = self.host.popen(argv, env=self.env)
        self.host.lab.add_cleanup(self.stop)
        wait_ready(
            self.socket.exists,
            what="tailscaled",
            until=f"socket {self.socket} appears",
            proc=self.proc,
            timeout=timeout,
        )
        return self

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.host.run(
            [peer_bin("tailscale"), f"--socket={self.socket}", *args], check=check, timeout=timeout, env=self.env
        )

    def up(
        self, login_server: str, auth_key: str, hostname: str | None = None, *extra: str, timeout: float = 60
    ) -> None:
        # The key goes through a 0600 file, never argv: argv shows in `ps` and in error output.
        key_file = self.dir / "authkey"
        if auth_key.startswith("file:"):  # the caller already keeps it in a file
            key_arg = auth_key
        else:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(auth_key)
            key_arg = f"file:{key_file}"
        args = [
            "up",
            f"--login-server={login_server}",
            f"--auth-key={key_arg}",
            "--accept-dns=false",
            f"--timeout={int(timeout)}s",
        ]
        if hostname:
            args.append(f"--hostname={hostname}")
        try:
            self.cli(*args, *extra, timeout=timeout + 10)
        finally:
            key_file.unlink(missing_ok=True)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def peers(self) -> list[dict]:
        return list((self.status().get("Peer") or {}).values())

    def ip(self, v6: bool = False) -> str:
        return self.cli("ip", "-6" if v6 else "-4").stdout.strip()

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


__all__ = ["Tailscaled"]
