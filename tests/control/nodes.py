"""Lab driver for our node: `mesh-helper serve` in a lab host, brought up, changed and read through its LocalAPI."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from engine.cli.meshctl import CLIError, _find_peer, _resolve_exit_node
from engine.localapi.client import HelperNotRunning, LocalAPIError, LocalClient
from engine.localapi.schema import MaskedPrefs, Options, PeerStatus, Prefs, Status
from engine.net.tsaddr import canonical_routes
from tests.lab.headscale import Headscale
from tests.lab.netlab import Host, Lab, LabError, poll_until
from tests.lab.peers import PeerMissing, peer_bin

CTL = "192.0.2.1"  # the control host on the flat lab LAN (see flat_lan)
EXIT_ROUTES = ("0.0.0.0/0", "::/0")
READY = "mesh-helper ready"


def flat_lan(lab: Lab, ctl_addr: str = CTL) -> tuple[Host, Callable[[str, int], Host]]:
    """Switch "lan" 192.0.2.0/24 with the control host "ctl" at ``ctl_addr``; ``host(name, n)`` adds 192.0.2.<n>."""
    sw = lab.switch("lan")
    ctl = lab.host("ctl")
    sw.attach(ctl, f"{ctl_addr}/24")

    def host(name: str, last_octet: int) -> Host:
        h = lab.host(name)
        sw.attach(h, f"192.0.2.{last_octet}/24")
        return h

    return ctl, host


def headscale_lan(lab: Lab, **headscale_kw: Any) -> tuple[Headscale, Callable[[str, int], Host]]:
    """flat_lan with headscale running on ctl (skipped when headscale is not built); returns (hs, host)."""
    try:
        peer_bin("headscale")
    except PeerMissing as e:
        pytest.skip(str(e))
    ctl, host = flat_lan(lab)
    return Headscale(ctl, **headscale_kw).start(), host


def local_api(socket_path: str | Path, fn: Callable[[LocalClient], Awaitable[Any]], timeout: float = 30) -> Any:
    """Run ``fn(client)`` against the LocalAPI on ``socket_path`` (a Unix socket: reachable from any namespace)."""

    async def run() -> Any:
        async with asyncio.timeout(timeout):
            return await fn(LocalClient(str(socket_path), timeout=timeout))

    return asyncio.run(run())


def start_serve(
    host: Host,
    socket_path: Path,
    run_dir: Path,
    *,
    tun: str = "mesh0",
    port: int = 0,
    dns_mode: str = "auto",
    endpoint_interval: float | None = None,
    map_watchdog: float | None = None,
    state: Path | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.Popen:
    """`mesh-helper serve` (the real engine) in ``host``, journals in ``run_dir``; returns once it is ready."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [
        "serve",
        "--socket",
        str(socket_path),
        "--tun",
        tun,
        "--port",
        str(port),
        "--run-dir",
        str(run_dir),
        "--journal",
        str(run_dir / "journal.json"),
        "--dns-mode",
        dns_mode,
    ]
    if state is not None:
        args += ["--state", str(state)]
    if endpoint_interval is not None:
        args += ["--endpoint-interval", str(endpoint_interval)]
    if map_watchdog is not None:
        args += ["--map-watchdog", str(map_watchdog)]
    proc = host.popen_python("engine.cli.helper", *args, *extra, module=True, env={"MESH_TESTING": "1", **(env or {})})
    Host.wait_log(proc, READY, timeout=timeout)
    return proc


def _flag_parser() -> argparse.ArgumentParser:
    """The old headless flags tests pass as extra args, split into serve flags, up prefs and driver options."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    s = p.add_argument_group("serve")
    s.add_argument("--dns-mode", default=None)
    s.add_argument("--mtu", default=None)
    s.add_argument("--map-watchdog", "--watchdog", dest="map_watchdog", type=float, default=None)
    s.add_argument("--endpoint-interval", type=float, default=None)
    s.add_argument("-v", "--verbose", action="store_true")
    u = p.add_argument_group("up")
    u.add_argument("--hostname", default=None)
    u.add_argument("--exit-node", default=None)
    u.add_argument("--exit-node-allow-lan-access", action=argparse.BooleanOptionalAction, default=False)
    u.add_argument("--advertise-exit-node", action=argparse.BooleanOptionalAction, default=False)
    u.add_argument("--advertise-routes", default=None)
    u.add_argument("--accept-dns", action=argparse.BooleanOptionalAction, default=True)
    u.add_argument("--accept-routes", action=argparse.BooleanOptionalAction, default=False)
    u.add_argument("--shields-up", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--logout-on-exit", action="store_true")  # driver: `logout` through the LocalAPI before stopping
    return p


def parse_node_flags(args: tuple[str, ...]) -> argparse.Namespace:
    a, rest = _flag_parser().parse_known_args(list(args))
    if rest:
        raise LabError(f"unknown node flags {rest}")
    return a


def advertised(routes: list[str], exit_node: bool) -> list[str] | None:
    """Prefs.AdvertiseRoutes: the subnet routes, plus both defaults when offering an exit node."""
    out = [r for r in routes if r not in EXIT_ROUTES] + (list(EXIT_ROUTES) if exit_node else [])
    return out or None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class OurNode:
    """Our node in ``host``: `mesh-helper serve --state` + `up` through the LocalAPI; status() = debug-engine.

    ``extra_args`` take the old headless flags (--exit-node X, --advertise-exit-node, --advertise-routes R,
    --accept-routes, --shields-up, --exit-node-allow-lan-access, --no-accept-dns, --dns-mode M, --watchdog N,
    --logout-on-exit): serve flags go to the helper, the rest become prefs. Every start sets all those prefs
    (a restarted helper resumes its saved prefs first). An exit node named (not an IP) is chosen once the
    netmap lists it, resolved to its ID as meshctl does.
    """

    dns_mode = "auto"

    def __init__(
        self,
        host: Host,
        login_server: str,
        *,
        auth_key: str | None = None,
        hostname: str | None = None,
        port: int = 41641,
        watchdog: float | None = None,
        tun: str = "mesh0",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.extra_args = tuple(extra_args)
        self.host = host
        self.login_server = login_server
        self.auth_key = auth_key
        self.hostname = hostname or f"py-{host.name}"
        self.port = port
        self.watchdog = watchdog
        self.tun = tun
        self.state = host.lab.dir / f"{host.name}.state"
        self.socket = host.lab.dir / f"{host.name}.sock"
        self.run_dir = host.lab.dir / f"{host.name}-run"
        self.proc: subprocess.Popen | None = None
        self.flags = parse_node_flags(self.extra_args)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "OurNode":
        f = self.flags = parse_node_flags(self.extra_args)
        extra = (("--mtu", f.mtu) if f.mtu else ()) + (("-v",) if f.verbose else ())
        self.proc = start_serve(
            self.host,
            self.socket,
            self.run_dir,
            tun=self.tun,
            port=self.port,
            dns_mode=f.dns_mode or self.dns_mode,
            endpoint_interval=f.endpoint_interval or 2,
            map_watchdog=f.map_watchdog or self.watchdog,
            state=self.state,
            extra=extra,
        )
        self.host.lab.add_cleanup(self.stop)
        self.up()
        return self

    def up(self) -> None:
        """Set every pref the flags stand for and connect (with the auth key, else an interactive login)."""
        f = self.flags
        exit_ip = f.exit_node if f.exit_node and _is_ip(f.exit_node) else ""
        changes = dict(
            want_running=True,
            control_url=self.login_server,
            hostname=f.hostname or self.hostname,
            exit_node_id="",
            exit_node_ip=exit_ip,
            exit_node_allow_lan_access=f.exit_node_allow_lan_access,
            corp_dns=f.accept_dns,
            route_all=f.accept_routes,
            shields_up=f.shields_up,
            advertise_routes=advertised(canonical_routes(f.advertise_routes), f.advertise_exit_node),
        )
        key = self.auth_key or ""

        async def up(c: LocalClient) -> None:
            st = await c.status(peers=False)
            if not key and st.backend_state in ("Running", "Starting"):
                await c.edit_prefs(MaskedPrefs.of(**changes))  # a saved login resumed: just the prefs
                return
            await c.start(Options(update_prefs=MaskedPrefs.of(**changes).apply_to(await c.prefs()), auth_key=key))
            if not key:
                await c.login_interactive()

        self.api(up)
        if f.exit_node and not exit_ip:
            self.wait_exit_option(f.exit_node)
            self.set_exit_node(f.exit_node)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        """Signal the helper and reap it; one that does not stop in time first dumps its stacks into its log."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if sig == signal.SIGTERM and self.flags.logout_on_exit:
            try:
                self.logout()
            except (LocalAPIError, HelperNotRunning, OSError, TimeoutError) as e:
                print(f"{self.hostname}: logout before stop failed: {e}")
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGUSR1)  # serve: faulthandler stack dump
            time.sleep(1)
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    # -- LocalAPI ---------------------------------------------------------------------------
    def api(self, fn: Callable[[LocalClient], Awaitable[Any]], timeout: float = 30) -> Any:
        return local_api(self.socket, fn, timeout)

    def logout(self) -> None:
        self.api(lambda c: c.logout())

    def prefs(self) -> Prefs:
        return self.api(lambda c: c.prefs())

    def edit_prefs(self, **changes: Any) -> Prefs:
        """PATCH the prefs (Python field names of engine.localapi.schema.Prefs); returns the resulting prefs."""
        return self.api(lambda c: c.edit_prefs(MaskedPrefs.of(**changes)))

    def ipn_status(self) -> Status:
        return self.api(lambda c: c.status())

    def ipn_peer(self, spec: str) -> PeerStatus | None:
        """The LocalAPI status of the peer ``spec`` names (short name, FQDN, hostname or tailnet IP)."""
        return _find_peer(self.ipn_status(), spec)

    def set_exit_node(self, spec: str | None, *, allow_lan: bool | None = None) -> Prefs:
        """Use the peer ``spec`` names (name or IP; resolved to its ID as meshctl does) as exit node; None clears."""

        async def edit(c: LocalClient) -> Prefs:
            try:
                nid, nip = await _resolve_exit_node(await c.status(), spec or "")
            except CLIError as e:
                raise LabError(f"{self.hostname}: exit node {spec!r}: {e}") from None
            ch: dict[str, Any] = {"exit_node_id": nid, "exit_node_ip": nip}
            if allow_lan is not None:
                ch["exit_node_allow_lan_access"] = bool(allow_lan)
            return await c.edit_prefs(MaskedPrefs.of(**ch))

        return self.api(edit)

    def wait_exit_option(self, spec: str, timeout: float = 60) -> None:
        """Until the LocalAPI status lists the peer ``spec`` names as an exit-node option."""

        def offered() -> bool:
            ps = self.ipn_peer(spec)
            return ps is not None and ps.exit_node_option

        wait_until(offered, f"{self.hostname}: {spec} offered as exit node", timeout, 0.3)

    # -- engine internals (GET meshvpn/debug-engine) ---------------------------------------
    def status(self) -> dict:
        """The engine's internals (State, InMapPoll, Prefs, ExitNodeID, Filter, Self, Peers...); {} if not running."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        try:
            return self.api(lambda c: c.debug_engine(), timeout=10)
        except (HelperNotRunning, LocalAPIError, OSError, TimeoutError):
            return {}

    def wait(self, pred: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st and pred(st):
                return st
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(
                    f"{self.hostname} exited rc={self.proc.returncode} waiting for {what}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"{self.hostname}: timed out waiting for {what}; status={json.dumps(st)[:1500]}\n"
                    f"log:\n{self.log()[-4000:]}"
                )
            time.sleep(0.2)

    def wait_synced(self, npeers: int | None = None, timeout: float = 30) -> dict:
        return self.wait(
            lambda s: (
                s.get("State") == "synced"
                and s.get("InMapPoll")
                and (npeers is None or len(s.get("Peers", [])) == npeers)
            ),
            f"synced with {npeers} peers",
            timeout,
        )

    def peer(self, name_prefix: str) -> dict | None:
        for p in self.status().get("Peers", []):
            if p["Name"].split(".")[0] == name_prefix:
                return p
        return None

    @property
    def ip(self) -> str:
        return self.status()["Self"]["Addresses"][0].split("/")[0]


def wait_until(pred: Callable[[], Any], what: str, timeout: float = 30, interval: float = 0.2):
    """netlab.poll_until, raising LabError when time runs out."""
    v = poll_until(pred, timeout, interval)
    if v is None:
        raise LabError(f"timed out waiting for {what}")
    return v


TCP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
data = b""
while not data.endswith(b"\n"):
    d = c.recv(65536)
    if not d: break
    data += d
c.sendall(b"echo:" + data)
c.close()
"""

TCP_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"x" * 100000 + b"\n")
buf = b""
while True:
    d = c.recv(65536)
    if not d: break
    buf += d
print(len(buf), buf[:5].decode())
"""
