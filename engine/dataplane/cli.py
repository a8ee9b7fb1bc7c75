"""`mesh-helper wg`: standalone userspace WireGuard (a wg-quick style file, or wg-quick's userspace implementation).

Usage::

    mesh-helper wg --config wg0.conf [--interface NAME] [--foreground] [--log-file PATH]
    mesh-helper wg --userspace IFACE          # what WG_QUICK_USERSPACE_IMPLEMENTATION runs

Config mode brings up TUN NAME (default: the file's stem), its addresses and MTU, routes
for every peer's AllowedIPs (default routes are skipped: use wg-quick for those), applies
the keys/peers and serves the UAPI socket /var/run/wireguard/NAME.sock, so wg(8) works.
Userspace mode creates only the TUN and the UAPI socket; wg-quick does the rest through
wg(8) and ip(8), exactly as with wireguard-go.

Without --foreground the command returns once the interface and socket are ready and the
engine keeps running in the background (a re-executed child in its own session), like
wireguard-go. The engine stops on SIGTERM/SIGINT, when its UAPI socket is deleted
(wg-quick down) or when its interface is deleted, and then removes the TUN and socket.
A stale socket or TUN left by a killed earlier run is cleaned at start.

Environment: MESH_WG_<TIMING> (e.g. MESH_WG_REKEY_AFTER_TIME=10) overrides a field of
``engine.wg.constants.Timings`` (tests shorten timers); MESH_WG_LOG_FILE is the log of a
background engine (default /dev/null); MESH_WG_LOG_LEVEL (default info).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.dataplane import uapi, wgconfig

READY_FD_ENV = "MESH_WG_READY_FD"
LOG_FILE_ENV = "MESH_WG_LOG_FILE"
WATCH_INTERVAL = 0.5  # seconds between checks that the socket and interface still exist


class StartError(RuntimeError):
    """The engine could not be brought up (message is user-facing)."""


def timings_from_env(environ: dict[str, str]) -> object | None:
    """engine.wg.constants.Timings with MESH_WG_<FIELD> overrides applied, or None if none are set."""
    from engine.wg.constants import Timings

    overrides = {}
    for f in dataclasses.fields(Timings):
        raw = environ.get(f"MESH_WG_{f.name.upper()}")
        if raw is None:
            continue
        try:
            overrides[f.name] = type(getattr(Timings(), f.name))(float(raw) if "." in raw or "e" in raw else int(raw))
        except ValueError:
            raise StartError(f"MESH_WG_{f.name.upper()}={raw!r} is not a number") from None
    return Timings(**overrides) if overrides else None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise StartError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _resolve(host: str, port: int) -> tuple[str, int]:
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise StartError(f"cannot resolve endpoint {host}: {e}") from None
    infos.sort(key=lambda i: i[0] != socket.AF_INET)  # prefer IPv4 like wg(8)
    return infos[0][4][0], port


def config_actions(cfg: wgconfig.WgConfig) -> list[uapi.Action]:
    """The UAPI actions that make a Device match `cfg` (endpoints resolved)."""
    i = cfg.interface
    actions: list[uapi.Action] = []
    if i.private_key is not None:
        actions.append(uapi.SetPrivateKey(i.private_key.raw))
    if i.listen_port is not None:
        actions.append(uapi.SetListenPort(i.listen_port))
    if i.fwmark:
        actions.append(uapi.SetFwmark(i.fwmark))
    actions.append(uapi.ReplacePeers())
    for p in cfg.peers:
        actions.append(
            uapi.UpsertPeer(
                p.public_key,
                endpoint=_resolve(*p.endpoint) if p.endpoint else uapi.UNSET,
                preshared_key=p.preshared_key.raw if p.preshared_key else uapi.UNSET,
                persistent_keepalive=p.persistent_keepalive,
                replace_allowed_ips=True,
                allowed_ips=p.allowed_ips,
            )
        )
    return actions


def _route_targets(cfg: wgconfig.WgConfig, log: logging.Logger) -> list[str]:
    nets = []
    for p in cfg.peers:
        for n in p.allowed_ips:
            if n.prefixlen == 0:
                log.warning("not routing %s (default route): use wg-quick for full-tunnel setups", n)
                continue
            if str(n) not in nets:
                nets.append(str(n))
    return nets


class Runner:
    """Owns one running engine: Device + interface config + UAPI server, and tears them down."""

    def __init__(
        self, ifname: str, cfg: wgconfig.WgConfig | None, log: logging.Logger, environ: dict[str, str] | None = None
    ) -> None:
        self.ifname = ifname
        self.cfg = cfg
        self.log = log
        self.environ = dict(os.environ if environ is None else environ)
        self.device = None
        self.server: uapi.UapiServer | None = None
        self.stop = threading.Event()
        self.reason = ""

    def _clean_stale(self) -> None:
        sock = uapi.UapiServer.SOCKET_DIR / f"{self.ifname}.sock"
        if sock.exists() and not uapi._stale(sock):
            raise StartError(f"{self.ifname} is already served by a running engine ({sock})")
        if _link_exists(self.ifname):
            kind = Path(f"/sys/class/net/{self.ifname}/tun_flags")
            # Only remove a leftover TUN of ours; never another kind of link with the same name.
            r = subprocess.run(["ip", "-d", "link", "show", "dev", self.ifname], capture_output=True, text=True)
            if " tun " in r.stdout or "tun type tun" in r.stdout or kind.exists():
                self.log.info("removing stale TUN %s", self.ifname)
                _ip("link", "del", "dev", self.ifname)
            else:
                raise StartError(f"an interface named {self.ifname} already exists and is not a TUN")

    def start(self) -> None:
        from engine.dataplane.device import Device

        self._clean_stale()
        mtu = (self.cfg.interface.mtu if self.cfg else None) or 1420
        dev = Device(
            self.ifname, mtu=mtu, timings=timings_from_env(self.environ), logger=logging.LoggerAdapter(self.log, {})
        )
        self.device = dev
        try:
            dev.up()
            if not _link_exists(self.ifname):
                raise StartError(f"the device did not create interface {self.ifname}")
            if self.cfg is not None:
                uapi.apply_actions(dev, config_actions(self.cfg))
                for a in self.cfg.interface.addresses:
                    _ip("addr", "add", str(a), "dev", self.ifname)
                _ip("link", "set", "dev", self.ifname, "mtu", str(mtu))
                _ip("link", "set", "dev", self.ifname, "up")
                for n in _route_targets(self.cfg, self.log):
                    fam = "-6" if ":" in n else "-4"
                    _ip(fam, "route", "replace", n, "dev", self.ifname)
            key = self.cfg.interface.private_key if self.cfg is not None else None
            self.server = uapi.UapiServer(
                dev, self.ifname, logger=self.log, private_key=key.raw if key is not None else None
            )
            self.server.start()
        except BaseException:
            self.close()
            raise
        self.log.info("interface %s up (listen port %s, %d peers)", self.ifname, dev.listen_port, len(dev.peers()))

    def watch(self) -> str:
        """Block until asked to stop, the socket is deleted or the interface vanishes; returns why."""
        assert self.server is not None
        while not self.stop.wait(WATCH_INTERVAL):
            try:
                st = os.lstat(self.server.path)
                if st.st_ino != self.server._ino:
                    return "UAPI socket replaced"
            except FileNotFoundError:
                return "UAPI socket deleted"
            if not _link_exists(self.ifname):
                return f"interface {self.ifname} deleted"
        return self.reason or "stop requested"

    def close(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.close()
        if self.device is not None:
            with contextlib.suppress(Exception):
                self.device.close()
        if _link_exists(self.ifname):
            subprocess.run(["ip", "link", "del", "dev", self.ifname], capture_output=True)


def _logger(level: str) -> logging.Logger:
    log = logging.getLogger("mesh-helper.wg")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    log.setLevel(level.upper())
    logging.getLogger("engine").setLevel(level.upper())
    if not logging.getLogger("engine").handlers:
        logging.getLogger("engine").addHandler(log.handlers[0])
    return log


def _signal_ready(ok: bool, message: str = "") -> None:
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(int(fd), (("ok" if ok else "error: " + message) + "\n").encode())
        os.close(int(fd))


def _run_foreground(ifname: str, cfg: wgconfig.WgConfig | None, log: logging.Logger) -> int:
    runner = Runner(ifname, cfg, log)

    def on_signal(signum, frame):
        runner.reason = f"signal {signal.Signals(signum).name}"
        runner.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        runner.start()
    except (StartError, wgconfig.ConfigError, uapi.UapiError, OSError, RuntimeError, ValueError) as e:
        log.error("%s", e)
        _signal_ready(False, str(e))
        return 1
    _signal_ready(True)
    try:
        why = runner.watch()
        log.info("stopping %s: %s", ifname, why)
    finally:
        runner.close()
    return 0


def _self_command(argv: list[str]) -> list[str]:
    """How to run `mesh-helper wg ARGV` again: the frozen bundle's own binary, or this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "wg", *argv]
    return [sys.executable, "-m", "engine.dataplane.cli", *argv]


def _daemonize(argv: list[str], ifname: str, timeout: float = 30.0) -> int:
    """Re-exec ourselves with --foreground in a new session; return when it reports ready."""
    r, w = os.pipe()
    log_path = os.environ.get(LOG_FILE_ENV, os.devnull)
    env = {**os.environ, READY_FD_ENV: str(w)}
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            _self_command(argv) + ["--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            env=env,
            pass_fds=(w,),
            start_new_session=True,
            cwd="/",
        )
    os.close(w)
    deadline = time.monotonic() + timeout
    buf = b""
    with os.fdopen(r, "rb") as rf:
        os.set_blocking(r, True)
        import select

        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rf], [], [], left)[0]:
                proc.kill()
                print(f"mesh-helper wg: {ifname}: engine did not become ready within {timeout:.0f}s", file=sys.stderr)
                return 1
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
    msg = buf.decode(errors="replace").strip()
    if msg == "ok":
        return 0
    proc.wait(timeout=10)
    detail = msg.removeprefix("error: ") or f"engine exited with status {proc.returncode}"
    print(f"mesh-helper wg: {ifname}: {detail}", file=sys.stderr)
    return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mesh-helper wg", description="Standalone userspace WireGuard interface.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", "-c", metavar="FILE", help="wg-quick style configuration file")
    g.add_argument(
        "--userspace", metavar="IFACE", help="wg-quick userspace implementation mode: create IFACE + UAPI socket only"
    )
    p.add_argument("--interface", "-i", metavar="NAME", help="interface name (default: config file stem)")
    p.add_argument("--foreground", "-f", action="store_true", help="do not detach; run until SIGTERM/SIGINT")
    p.add_argument("--log-file", metavar="PATH", help="log file of the background engine (default: /dev/null)")
    p.add_argument("--log-level", default=os.environ.get("MESH_WG_LOG_LEVEL", "info"))
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(args_list)
    if os.geteuid() != 0:
        print("mesh-helper wg: needs root (or CAP_NET_ADMIN) to create a TUN device", file=sys.stderr)
        return 1
    cfg = None
    if args.config:
        try:
            cfg = wgconfig.load(args.config)
        except wgconfig.ConfigError as e:
            print(f"mesh-helper wg: {e}", file=sys.stderr)
            return 1
        ifname = args.interface or Path(args.config).stem
    else:
        ifname = args.userspace
    if not ifname or len(ifname) > 15 or "/" in ifname or not ifname.isprintable() or " " in ifname:
        print(f"mesh-helper wg: invalid interface name {ifname!r} (1-15 chars)", file=sys.stderr)
        return 1
    if args.log_file:
        os.environ[LOG_FILE_ENV] = args.log_file
    if not args.foreground:
        rest = [a for a in args_list if a not in ("--foreground", "-f")]
        return _daemonize(rest, ifname)
    log = _logger(args.log_level)
    for w in cfg.warnings if cfg else ():
        log.warning("%s", w)
    return _run_foreground(ifname, cfg, log)


def userspace_main(argv: list[str] | None = None) -> int:
    """Entry point for a console script usable as WG_QUICK_USERSPACE_IMPLEMENTATION (argv: IFACE)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: mesh-wg-userspace IFACE", file=sys.stderr)
        return 2
    return main(["--userspace", args[0]])


if __name__ == "__main__":
    sys.exit(main())
