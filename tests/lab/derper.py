"""Runs tailscale's derper (plain HTTP DERP + STUN) for tests, on loopback or inside a lab host."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence

from tests.lab.netlab import stop_process, wait_ready

DEFAULT_BIN = pathlib.Path(os.environ.get("MESH_PEER_BIN", "/var/cache/meshvpn-peers/bin")) / "derper"


def derper_available() -> bool:
    return DEFAULT_BIN.exists()


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Derper:
    """`with Derper(addr="127.0.0.1") as d:` ... `d.derp_map()`; `d.restart()`; never `-dev`.

    `popen` lets a lab host run it inside its namespace (e.g. `host.popen`); `probe` is a
    callable(argv) -> returncode used to wait for readiness from inside that namespace.
    """

    def __init__(
        self,
        addr: str = "127.0.0.1",
        port: int | None = None,
        stun_port: int | None = None,
        region_id: int = 900,
        workdir: str | os.PathLike | None = None,
        popen: Callable[..., subprocess.Popen] | None = None,
        binary: os.PathLike | str = DEFAULT_BIN,
        in_namespace: bool = False,
        tls_hostname: str = "",
    ) -> None:
        self.addr = addr
        self.port = port or (3340 if in_namespace else free_port())
        self.stun_port = stun_port or (3478 if in_namespace else free_port(socket.SOCK_DGRAM))
        self.region_id = region_id
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="derper-")
            workdir = self._tmp.name
        self.workdir = pathlib.Path(workdir)
        self._popen = popen or (lambda argv, **kw: subprocess.Popen(argv, **kw))
        self.binary = str(binary)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "derper.log"
        self._in_ns = in_namespace
        self.tls_hostname = tls_hostname  # non-empty: serve TLS (-certmode manual) with a self-signed cert

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            "-a",
            f"{self.addr}:{self.port}",
            "-stun-port",
            str(self.stun_port),
            "-c",
            str(self.workdir / "derper.json"),
            "-http-port",
            "-1",
        ]
        if self.tls_hostname:
            argv += ["-certmode", "manual", "-certdir", str(self.workdir / "certs"), "-hostname", self.tls_hostname]
        return argv

    def _write_cert(self) -> None:
        """Self-signed cert for tls_hostname as derper's manual cert mode wants it (<host>.crt/.key)."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        d = self.workdir / "certs"
        d.mkdir(exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.tls_hostname)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(self.tls_hostname)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        (d / f"{self.tls_hostname}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{self.tls_hostname}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def start(self, timeout: float = 15.0) -> None:
        if self.tls_hostname and not (self.workdir / "certs").exists():
            self._write_cert()
        log = open(self.log_path, "ab")
        try:
            self.proc = self._popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        wait_ready(
            lambda: "derper: serving on" in self.log(),
            what="derper",
            until="'serving on' in its log",
            proc=self.proc,
            timeout=timeout,
            interval=0.05,
            log=self.log,
        )

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def region(self) -> dict:
        """A tailcfg.DERPRegion JSON dict for this server (plain HTTP: DERPPort set explicitly)."""
        return {
            "RegionID": self.region_id,
            "RegionCode": f"lab{self.region_id}",
            "RegionName": f"lab derper {self.region_id}",
            "Nodes": [
                {
                    "Name": f"{self.region_id}a",
                    "RegionID": self.region_id,
                    "HostName": self.tls_hostname or self.addr,
                    "IPv4": self.addr,
                    "IPv6": "none",
                    "STUNPort": self.stun_port,
                    "DERPPort": self.port,
                    "InsecureForTests": True,
                }
            ],
        }

    def derp_map(self) -> dict:
        return {"Regions": {str(self.region_id): self.region()}}

    def __enter__(self) -> "Derper":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def merge_derp_maps(servers: Sequence[Derper]) -> dict:
    return {"Regions": {str(s.region_id): s.region() for s in servers}}
