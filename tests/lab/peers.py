"""Reference peers for lab tests: binary lookup (`peer_bin`), WireGuard key helpers and a wireguard-go runner."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.lab.netlab import UAPI_DIR, Host, LabError, stop_process, wait_ready

PEER_CACHE_BIN = Path("/var/cache/meshvpn-peers/bin")
_DEBIAN_DIRS = (Path("/usr/bin"), Path("/usr/sbin"), Path("/bin"), Path("/sbin"))
_HINTS = {
    "wireguard-go": "apt-get install wireguard-go",
    "wg": "apt-get install wireguard-tools",
    "wg-quick": "apt-get install wireguard-tools",
    "iperf3": "apt-get install iperf3",
    "nft": "apt-get install nftables",
    "ping": "apt-get install iputils-ping",
    "socat": "apt-get install socat",
}


class PeerMissing(LabError):
    """A reference-peer binary is not installed."""


def peer_bin(name: str) -> str:
    """Absolute path of a reference peer: $MESH_PEER_BIN, /var/cache/meshvpn-peers/bin, Debian paths, $PATH."""
    dirs = []
    if os.environ.get("MESH_PEER_BIN"):
        dirs.append(Path(os.environ["MESH_PEER_BIN"]))
    dirs += [PEER_CACHE_BIN, *_DEBIAN_DIRS]
    for d in dirs:
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    found = shutil.which(name)
    if found:
        return found
    hint = _HINTS.get(name, "run installers/dev/build-peers.sh (Go reference peers)")
    raise PeerMissing(f"reference peer {name!r} not found in {', '.join(map(str, dirs))} or $PATH; install it: {hint}")


# --- keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class WgKeyPair:
    """A WireGuard key pair in base64; repr shows only the public key's prefix."""

    private: str
    public: str

    def __repr__(self) -> str:
        return f"WgKeyPair(public={self.public[:8]}…)"


def gen_keypair() -> WgKeyPair:
    k = X25519PrivateKey.generate()
    priv = k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return WgKeyPair(base64.b64encode(priv).decode(), base64.b64encode(pub).decode())


def gen_psk() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# --- wg(8) wrapper -------------------------------------------------------------


class WgTool:
    """`wg` commands against interface `ifname` from inside `host` (works for any UAPI implementation)."""

    def __init__(self, host: Host, ifname: str):
        self.host = host
        self.ifname = ifname
        self.wg = peer_bin("wg")

    def set(self, *args: str, input: str | None = None) -> None:
        self.host.run([self.wg, "set", self.ifname, *args], input=input)

    def set_private_key(self, private_b64: str) -> None:
        self.set("private-key", "/dev/stdin", input=private_b64 + "\n")

    def add_peer(
        self,
        public: str,
        *,
        endpoint: str | None = None,
        allowed_ips: str = "",
        keepalive: int | None = None,
        psk: str | None = None,
    ) -> None:
        args = ["peer", public]
        if endpoint:
            args += ["endpoint", endpoint]
        if allowed_ips:
            args += ["allowed-ips", allowed_ips]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive)]
        if psk:
            args += ["preshared-key", "/dev/stdin"]
        self.set(*args, input=(psk + "\n") if psk else None)

    def remove_peer(self, public: str) -> None:
        self.set("peer", public, "remove")

    def show(self, *what: str) -> str:
        return self.host.run([self.wg, "show", self.ifname, *what]).stdout

    def dump(self) -> list[list[str]]:
        """`wg show IF dump` rows: first the interface row, then one row per peer (tab-separated fields)."""
        return [line.split("\t") for line in self.show("dump").splitlines() if line]

    def latest_handshake(self, public: str) -> int:
        for line in self.show("latest-handshakes").splitlines():
            k, _, v = line.partition("\t")
            if k == public:
                return int(v)
        return 0

    def transfer(self, public: str) -> tuple[int, int]:
        """(rx_bytes, tx_bytes) for `public`."""
        for line in self.show("transfer").splitlines():
            parts = line.split("\t")
            if parts[0] == public:
                return int(parts[1]), int(parts[2])
        return 0, 0


def wait_for_socket(ifname: str, timeout: float = 10, proc: subprocess.Popen | None = None) -> Path:
    sock = UAPI_DIR / f"{ifname}.sock"
    wait_ready(
        sock.exists,
        what=f"process for {ifname}",
        until=f"UAPI socket {sock} appears",
        proc=proc,
        timeout=timeout,
        interval=0.05,
    )
    return sock


class WgInterface:
    """What every lab WireGuard runner has: keys, listen port, addresses, MTU, its process and wg(8) on `ifname`.

    ifname must be machine-unique (UAPI sockets are global): use `lab.ifname()`.
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
        log_level: str = "error",
    ):
        self.host = host
        self.ifname = ifname
        self.keys = keys or gen_keypair()
        self.listen_port = listen_port
        self.address = address
        self.address6 = address6
        self.mtu = mtu
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.wg = WgTool(host, ifname)

    @property
    def public_key(self) -> str:
        return self.keys.public

    @property
    def socket_path(self) -> Path:
        return UAPI_DIR / f"{self.ifname}.sock"

    def add_peer(self, public: str, **kw) -> None:
        self.wg.add_peer(public, **kw)


class WireguardGo(WgInterface):
    """wireguard-go on `ifname` inside `host`, configured with wg(8)."""

    def start(self) -> "WireguardGo":
        env = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": self.log_level}
        self.proc = self.host.popen([peer_bin("wireguard-go"), "-f", self.ifname], env=env)
        self.host.lab.add_cleanup(self.stop)
        wait_for_socket(self.ifname, proc=self.proc)
        self.wg.set_private_key(self.keys.private)
        if self.listen_port is not None:
            self.wg.set("listen-port", str(self.listen_port))
        self.host.run(["ip", "link", "set", self.ifname, "mtu", str(self.mtu)])
        if self.address:
            self.host.run(["ip", "addr", "add", self.address, "dev", self.ifname])
        if self.address6:
            self.host.run(["ip", "addr", "add", self.address6, "dev", self.ifname, "nodad"])
        self.host.run(["ip", "link", "set", self.ifname, "up"])
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
        sock = self.socket_path
        if sock.exists():
            try:
                sock.unlink()
            except OSError:
                pass


__all__ = [
    "peer_bin",
    "PeerMissing",
    "WgKeyPair",
    "gen_keypair",
    "gen_psk",
    "WgTool",
    "WgInterface",
    "WireguardGo",
    "wait_for_socket",
]
