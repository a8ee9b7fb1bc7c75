"""A real systemd-resolved (unpacked by installers/dev/fetch-resolved.sh) on a private D-Bus inside one lab host.

Nothing on the host changes. A holder process (`ip netns exec <ns> sh`) keeps a mount
namespace of its own (ip netns exec makes / a slave, so its mounts never propagate back) in
which it mounts:

    tmpfs                 on /run/dbus        private system bus socket
    tmpfs                 on /run/systemd     resolved's runtime dir (/run/systemd/resolve)
    <lab>/passwd, group   on /etc/passwd, /etc/group   + a `systemd-resolve` user to drop privileges to
    <lab>/etc-systemd     on /etc/systemd     resolved.conf: DNS=<the lab's upstream>
    <lab>/resolv.conf     on /etc/resolv.conf "nameserver 127.0.0.53" (never the host's file)

dbus-daemon, systemd-resolved and everything run through `ResolvedHost` (our node,
resolvectl, dig, getent) enter that mount namespace and the host's network namespace with
nsenter, and see resolvectl on PATH. /etc/resolv.conf points at resolved's stub (127.0.0.53),
as on a desktop with resolved; it is a fixed file, not a bind of stub-resolv.conf, because
resolved replaces that file by rename (a bind mount would keep showing the old inode).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from tests.lab.netlab import Host, LabError

CACHE_DIR = Path(os.environ.get("MESH_PEER_CACHE", "/var/cache/meshvpn-peers")) / "resolved"
SKIP_REASON = (
    f"{CACHE_DIR} missing: run `bash installers/dev/fetch-resolved.sh` (unpacks systemd-resolved "
    "there without installing it)"
)

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- lab-only system bus: root and systemd-resolve in one private mount namespace -->
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

HOLDER = """set -e
mount -t tmpfs -o mode=0755 tmpfs /run/dbus
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mount --bind {d}/passwd /etc/passwd
mount --bind {d}/group /etc/group
mount --bind {d}/etc-systemd /etc/systemd
mount --bind {d}/resolv.conf /etc/resolv.conf
echo ready
exec sleep infinity
"""


def resolved_binary(cache: Path = CACHE_DIR) -> Path | None:
    for rel in ("lib/systemd/systemd-resolved", "usr/lib/systemd/systemd-resolved"):
        if (cache / rel).is_file():
            return cache / rel
    return None


def cache_ready(cache: Path = CACHE_DIR) -> bool:
    return resolved_binary(cache) is not None and (cache / "usr/bin/resolvectl").is_file()


def _free_id(*files: Path, start: int = 64990) -> int:
    used = set()
    for f in files:
        for line in f.read_text().splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit():
                used.add(int(parts[2]))
    n = start
    while n in used:
        n -= 1
    return n


class ResolvedHost(Host):
    """The same lab host, but commands run in the private mount namespace (private bus + resolved)."""

    def __init__(self, base: Host, holder_pid: int, path_prefix: Sequence[str], ld_path: str | None) -> None:
        super().__init__(base.lab, base.name, base.ns)
        self.addrs, self.addrs6 = base.addrs, base.addrs6
        self._holder = holder_pid
        self._env = [f"PATH={':'.join(path_prefix)}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"]
        if ld_path:
            self._env.append(f"LD_LIBRARY_PATH={ld_path}")

    def wrap(self, cmd) -> list[str]:
        argv = super().wrap(cmd)[4:]  # Host.wrap: ["ip", "netns", "exec", ns, *argv]
        return ["nsenter", "-t", str(self._holder), "-m", "-n", "--", "env", *self._env, *argv]


class PrivateResolved:
    """Start dbus-daemon + systemd-resolved for `host`; `.host` runs commands next to them."""

    def __init__(self, host: Host, *, upstream_dns: str | None = None, cache: Path = CACHE_DIR) -> None:
        self.base = host
        self.cache = cache
        self.dir = host.lab.dir / f"resolved-{host.name}"
        self.upstream_dns = upstream_dns
        self.host: ResolvedHost | None = None
        self.resolved: subprocess.Popen | None = None
        self.bus: subprocess.Popen | None = None

    def _ld_path(self) -> str | None:
        # libsystemd-shared comes from the installed systemd package (RPATH); unpacked next to
        # resolved only when systemd is not installed (see fetch-resolved.sh).
        own = self.cache / "usr/lib/x86_64-linux-gnu/systemd"
        return str(own) if own.is_dir() else None

    def start(self) -> "PrivateResolved":
        exe = resolved_binary(self.cache)
        if exe is None:
            raise LabError(SKIP_REASON)
        d = self.dir
        (d / "etc-systemd").mkdir(parents=True, exist_ok=True)
        passwd, group = Path("/etc/passwd"), Path("/etc/group")
        uid = _free_id(passwd, group)
        (d / "passwd").write_text(
            passwd.read_text() + f"systemd-resolve:x:{uid}:{uid}:lab resolver:/:/usr/sbin/nologin\n"
        )
        (d / "group").write_text(group.read_text() + f"systemd-resolve:x:{uid}:\n")
        conf = ["[Resolve]", "LLMNR=no", "MulticastDNS=no", "DNSSEC=no", "FallbackDNS="]
        if self.upstream_dns:
            conf.append(f"DNS={self.upstream_dns}")
        (d / "etc-systemd" / "resolved.conf").write_text("\n".join(conf) + "\n")
        (d / "bus.conf").write_text(BUS_CONF)
        (d / "resolv.conf").write_text("nameserver 127.0.0.53\n")
        holder = self.base.popen(["sh", "-c", HOLDER.format(d=d)])
        deadline = time.monotonic() + 10
        while "ready" not in Host.log_of(holder):
            if holder.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"mount-namespace holder failed: {Host.log_of(holder)}")
            time.sleep(0.05)
        self.host = ResolvedHost(self.base, holder.pid, [str(self.cache / "usr/bin")], self._ld_path())
        self.bus = self.host.popen(["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={d / 'bus.conf'}"])
        self.host.wait_for(["test", "-S", "/run/dbus/system_bus_socket"], timeout=10)
        self.resolved = self.host.popen([str(exe)], env={"SYSTEMD_LOG_LEVEL": "debug"})
        self.host.wait_for(
            ["sh", "-c", "test -f /run/systemd/resolve/stub-resolv.conf && ss -lun | grep -q 127.0.0.53"], timeout=15
        )
        return self

    def log(self) -> str:
        return Host.log_of(self.resolved) if self.resolved else ""

    def alive(self) -> bool:
        return self.resolved is not None and self.resolved.poll() is None

    def resolvectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.host is not None
        return self.host.run(["resolvectl", "--no-pager", *args], check=check)
