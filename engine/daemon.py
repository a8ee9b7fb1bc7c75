"""Headless node runner: `mesh-helper --login-server URL --auth-key KEY --state FILE` joins a tailnet.

Composition (one asyncio loop; the WireGuard data plane runs in its own worker threads)::

    state file (0600: machine/node/disco/NL keys) -> ControlClient --NetMapUpdated--> reconfig
        -> Device.upsert_peer/remove_peer (diff only) and LinuxRouter.set(RouterConfig)

Endpoints published to control are the host's interface addresses with the UDP listen
port (no STUN/DERP/disco yet: peers are reached at the Endpoints from the map). SIGTERM
and SIGINT stop the client, restore routes and addresses, and close the TUN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from engine.control.client import (
    AuthURL, ControlClient, ControlOptions, LoginFailed, NetMapUpdated, NodeKeyRotated, StatusChanged,
)
from engine.keys import DiscoPrivate, MachinePrivate, NLPrivate, NodePrivate
from engine.netmap import NetworkMap
from engine.reconfig import (
    NO_CHANGES, CGNAT_V4, TAILSCALE_ULA_V6, ReconfigOptions, RouterConfig, WgConfig, diff_wg, router_config,
    wg_config,
)
from engine.tailcfg import Hostinfo, NetInfo

VERSION = "0.1.0"
DEFAULT_TUN = "mesh0"
DEFAULT_MTU = 1280  # tailscaled's default TUN MTU (net/tstun/mtu.go)
DEFAULT_DERP_REGION = 999  # headscale's embedded DERP region; NAT helper will pick it properly


# --- state file -------------------------------------------------------------------------


@dataclass
class NodeState:
    machine_key: MachinePrivate
    node_key: NodePrivate
    disco_key: DiscoPrivate
    nl_key: NLPrivate
    backend_log_id: str
    registered_url: str | None = None  # control URL we last registered with

    def __repr__(self) -> str:
        return (f"NodeState(machine={self.machine_key.public().short()}, node={self.node_key.public().short()}, "
                f"disco={self.disco_key.public().short()})")

    @classmethod
    def generate(cls) -> "NodeState":
        return cls(MachinePrivate.generate(), NodePrivate.generate(), DiscoPrivate.generate(),
                   NLPrivate.generate(), uuid.uuid4().hex + uuid.uuid4().hex)

    def to_json(self) -> dict:
        return {
            "MachineKey": self.machine_key.to_text(),
            "NodeKey": self.node_key.to_text(),
            "DiscoKey": self.disco_key.to_text(),
            "NLKey": self.nl_key.to_text(),
            "BackendLogID": self.backend_log_id,
            "RegisteredURL": self.registered_url,
        }

    @classmethod
    def from_json(cls, d: dict) -> "NodeState":
        return cls(
            MachinePrivate.from_text(d["MachineKey"]), NodePrivate.from_text(d["NodeKey"]),
            DiscoPrivate.from_text(d["DiscoKey"]), NLPrivate.from_text(d["NLKey"]),
            d.get("BackendLogID") or uuid.uuid4().hex * 2, d.get("RegisteredURL"),
        )


def load_state(path: Path, log: logging.Logger) -> NodeState:
    if path.exists():
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("state file %s had mode %o; tightening to 0600", path, stat.S_IMODE(st.st_mode))
            os.chmod(path, 0o600)
        try:
            return NodeState.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError) as e:
            raise SystemExit(f"state file {path} is corrupt ({type(e).__name__}); move it away to start fresh")
    state = NodeState.generate()
    save_state(path, state)
    log.info("created state file %s (%r)", path, state)
    return state


def save_state(path: Path, state: NodeState) -> None:
    """Atomically write the state file with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(state.to_json(), indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- endpoints --------------------------------------------------------------------------


def local_endpoints(port: int, *, exclude_ifaces: set[str]) -> list[str]:
    """Interface addresses (no loopback/link-local/Tailscale ranges) with the UDP port, v4 first."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        ifaces = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    v4, v6 = [], []
    for itf in ifaces:
        if itf.get("ifname") in exclude_ifaces or "UP" not in itf.get("flags", []):
            continue
        for a in itf.get("addr_info", []):
            try:
                ip = ipaddress.ip_address(a.get("local", ""))
            except ValueError:
                continue
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip in CGNAT_V4 or ip in TAILSCALE_ULA_V6:
                continue
            (v4 if ip.version == 4 else v6).append(f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}")
    return v4 + v6


# --- the node ---------------------------------------------------------------------------


class Node:
    """Control client + WireGuard device + router for one headless node."""

    def __init__(self, args: argparse.Namespace, state: NodeState, state_path: Path, log: logging.Logger,
                 device_factory=None, router_factory=None) -> None:
        self.args = args
        self.state = state
        self.state_path = state_path
        self.log = log
        self._device_factory = device_factory
        self._router_factory = router_factory
        self.device = None
        self.router = None
        self.client: ControlClient | None = None
        self.wg_applied: WgConfig | None = None
        self.router_applied: RouterConfig | None = None
        self.reconfigs = 0
        self.peer_upserts = 0
        self.peer_removes = 0
        self._status_path = Path(args.status_file) if args.status_file else None
        self._last_status: dict = {}
        self._applied_nm: NetworkMap | None = None  # the netmap the data plane reflects

    @property
    def applied_netmap(self) -> NetworkMap | None:
        """The netmap the WireGuard device and routes currently reflect (None before the first / after logout)."""
        return self._applied_nm

    def _open_dataplane(self) -> None:
        if self._device_factory is not None:
            self.device = self._device_factory()
        else:
            from engine.dataplane.device import Device

            self.device = Device(self.args.tun, mtu=self.args.mtu, logger=self.log.getChild("wg"))
        self.device.set_private_key(self.state.node_key.raw)
        self.device.set_listen_port(self.args.port)
        self.device.up()
        if self._router_factory is not None:
            self.router = self._router_factory()
        else:
            from engine.router.linux import LinuxRouter

            self.router = LinuxRouter(self.args.tun, logger=self.log.getChild("router"))
        self.router.up(self.args.mtu)
        self.log.info("data plane up: %s listen port %d, node key %s", self.args.tun, self.device.listen_port,
                      self.state.node_key.public().short())

    def _close_dataplane(self) -> None:
        if self.router is not None:
            with contextlib.suppress(Exception):
                self.router.close()
        if self.device is not None:
            with contextlib.suppress(Exception):
                self.device.close()
        self.log.info("data plane closed; routes and addresses restored")

    def _hostinfo(self) -> Hostinfo:
        return Hostinfo(
            hostname=self.args.hostname or socket.gethostname(),
            os="linux",
            ipn_version=VERSION,
            backend_log_id=self.state.backend_log_id,
            go_arch="amd64",
            net_info=NetInfo(preferred_derp=self.args.derp_region),
        )

    def on_event(self, ev) -> None:
        if isinstance(ev, NetMapUpdated):
            self.apply_netmap(ev.netmap)
        elif isinstance(ev, StatusChanged):
            s = ev.status
            self.log.info("status: state=%s in_map_poll=%s%s", s.state.value, s.in_map_poll,
                          f" error={s.last_error}" if s.last_error else "")
            if s.state.value in ("logged-out", "needs-login") and self.wg_applied is not None:
                self.clear_dataplane()
            if s.state.value == "authenticated" and self.state.registered_url != self.args.login_server:
                self.state.registered_url = self.args.login_server
                save_state(self.state_path, self.state)
            self.write_status()
        elif isinstance(ev, AuthURL):
            self.log.warning("to authenticate, visit: %s", ev.url)
            self.write_status()
        elif isinstance(ev, NodeKeyRotated):
            self.state.node_key = ev.new_private
            save_state(self.state_path, self.state)
            if self.device is not None:
                self.device.set_private_key(ev.new_private.raw)
            self.log.info("node key rotated: %s -> %s", ev.old_public.short(), ev.new_private.public().short())
        elif isinstance(ev, LoginFailed):
            self.log.error("login failed: %s", ev.error)

    def apply_netmap(self, nm: NetworkMap) -> None:
        opts = ReconfigOptions()
        new = wg_config(nm, opts, prev=self.wg_applied if nm.delta and not nm.self_changed else None)
        diff = diff_wg(self.wg_applied, new, hint=None if self.wg_applied is None else nm.delta)
        if diff is not NO_CHANGES and self.device is not None:
            self.reconfigs += 1
            for k in diff.remove:
                self.device.remove_peer(k.raw)
                self.peer_removes += 1
            for p in diff.upsert:
                self.device.upsert_peer(p.public_key.raw, endpoint=p.endpoint, allowed_ips=list(p.allowed_ips),
                                        replace_allowed_ips=True)
                self.peer_upserts += 1
            self.log.info("wg: %d peers (+%d upserted, -%d removed)", len(new.peers), len(diff.upsert),
                          len(diff.remove))
        self.wg_applied = new
        if diff is not NO_CHANGES or nm.self_changed or self.router_applied is None:
            rc = router_config(nm, new)  # O(peers): only when WireGuard peers or self changed
            if rc != self.router_applied and self.router is not None:
                self.router.set(rc)
            self.router_applied = rc
        self._applied_nm = nm
        self.write_status()

    def clear_dataplane(self) -> None:
        """Logged out / needs login: drop all peers and routes (the TUN stays)."""
        if self.device is not None and self.wg_applied is not None:
            for k in self.wg_applied.peers:
                self.device.remove_peer(k.raw)
        if self.router is not None:
            self.router.set(RouterConfig(local_addrs=self.router_applied.local_addrs if self.router_applied else ()))
        self.wg_applied = None
        self.router_applied = None
        self._applied_nm = None
        self.log.info("data plane cleared (not logged in)")

    def write_status(self) -> None:
        """Machine-readable status for tests/operators (no secrets)."""
        if self._status_path is None or self.client is None:
            return
        nm = self._applied_nm
        s = self.client.status
        doc = {
            "State": s.state.value,
            "InMapPoll": s.in_map_poll,
            "LastError": s.last_error,
            "AuthURL": s.auth_url,
            "NodeKey": str(self.client.node_key.public()),
            "ListenPort": self.device.listen_port if self.device else 0,
            "Reconfigs": self.reconfigs,
            "PeerUpserts": self.peer_upserts,
            "PeerRemoves": self.peer_removes,
            "StreamsStarted": self.client.streams_started,
            "Self": None,
            "Peers": [],
        }
        if nm is not None and nm.self_node is not None:
            doc["Self"] = {"ID": nm.self_node.id, "Name": nm.self_node.name, "Addresses": list(nm.self_node.addresses)}
            doc["Peers"] = [
                {"ID": p.id, "Name": p.name, "Key": str(p.key), "Addresses": list(p.addresses),
                 "AllowedIPs": list(p.effective_allowed_ips()), "Endpoints": list(p.endpoints or ()),
                 "DiscoKey": str(p.disco_key) if p.disco_key else None, "HomeDERP": p.effective_home_derp(),
                 "Online": p.online}
                for p in nm.sorted_peers()
            ]
        if doc == self._last_status:
            return
        self._last_status = doc
        tmp = self._status_path.with_name(self._status_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self._status_path)

    async def run(self, stop: asyncio.Event) -> int:
        self._open_dataplane()
        try:
            exclude = {self.args.tun, "lo"}
            eps = local_endpoints(self.device.listen_port, exclude_ifaces=exclude)
            opts = ControlOptions(
                server_url=self.args.login_server,
                machine_key=self.state.machine_key,
                node_key=self.state.node_key,
                disco_public=self.state.disco_key.public(),
                nl_public=self.state.nl_key.public(),
                hostinfo=self._hostinfo(),
                auth_key=self.args.auth_key,
                registered_before=self.state.registered_url == self.args.login_server,
                endpoints=tuple(eps),
                endpoint_types=tuple(1 for _ in eps),
                watchdog_timeout=self.args.watchdog,
            )
            self.client = ControlClient(opts, on_event=self.on_event, logger=self.log.getChild("control"))
            self.log.info("joining %s as %s with endpoints %s", self.args.login_server, opts.hostinfo.hostname, eps)
            async with asyncio.TaskGroup() as tg:
                client_task = tg.create_task(self.client.run())
                tg.create_task(self._watch_endpoints(exclude))
                await stop.wait()
                if self.args.logout_on_exit:
                    await self.client.logout()
                raise _Stop()
        except* _Stop:
            pass
        finally:
            self._close_dataplane()
        return 0

    async def _watch_endpoints(self, exclude: set[str]) -> None:
        while True:
            await asyncio.sleep(self.args.endpoint_interval)
            eps = await asyncio.to_thread(local_endpoints, self.device.listen_port, exclude_ifaces=exclude)
            if tuple(eps) != self.client.opts.endpoints:
                self.log.info("endpoints changed: %s", eps)
                self.client.set_endpoints(eps)


class _Stop(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mesh-helper", description="Headless meshvpn node (tailscaled analogue).")
    p.add_argument("--login-server", required=True, help="control server URL, e.g. https://headscale.example")
    p.add_argument("--auth-key", default=os.environ.get("MESH_AUTH_KEY"),
                   help="pre-auth key (or $MESH_AUTH_KEY); without it an AuthURL is logged")
    p.add_argument("--state", required=True, help="state file (created 0600)")
    p.add_argument("--hostname", default=None)
    p.add_argument("--tun", default=DEFAULT_TUN)
    p.add_argument("--port", type=int, default=0, help="UDP listen port (0 = random)")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU)
    p.add_argument("--derp-region", type=int, default=DEFAULT_DERP_REGION, help="NetInfo.PreferredDERP to publish")
    p.add_argument("--watchdog", type=float, default=120.0, help="map-stream watchdog seconds")
    p.add_argument("--endpoint-interval", type=float, default=10.0, help="seconds between endpoint re-scans")
    p.add_argument("--status-file", default=None, help="write a JSON status (no secrets) here on every change")
    p.add_argument("--logout-on-exit", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("hpack", "h2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("mesh-helper")
    if os.geteuid() != 0:
        log.warning("not running as root: creating the TUN device will probably fail")
    state_path = Path(args.state)
    old_umask = os.umask(0o077)
    try:
        state = load_state(state_path, log)
    finally:
        os.umask(old_umask)
    node = Node(args, state, state_path, log)

    async def amain() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        rc = await node.run(stop)
        log.info("stopped after %.1fs", time.monotonic() - t0)
        return rc

    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
