"""Network lab: hosts as network namespaces, veth links, bridges and nftables NAT routers, torn down on every exit path.

Usage::

    with Lab() as lab:
        a, b = lab.host("a"), lab.host("b")
        lab.link(a, b, "192.0.2.1/24", "192.0.2.2/24")
        a.run(["ping", "-c1", "192.0.2.2"])

Naming (everything must stay unique across concurrent test runs on one machine):

- every lab has a *tag*: 4 base-36 chars of the creating process id + 1 counter char;
- namespaces are ``mvl<tag>-<host[:6]>`` (<= 15 chars);
- interfaces live only inside lab namespaces (veths are created directly in their
  target namespaces), named ``eth0``, ``eth1``, ... per host, ``wan``/``lan`` on routers;
- names that are visible machine-wide (WireGuard UAPI sockets in /var/run/wireguard)
  must come from ``lab.ifname("wg")`` -> ``mw<tag><n>``.

``sweep_stale()`` (run on every ``Lab.__enter__``) deletes namespaces and sockets whose
creating process is gone, so a killed earlier run never leaks into the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Sequence, TypeVar

NS_PREFIX = "mvl"
WG_IF_PREFIX = "mw"
UAPI_DIR = Path("/var/run/wireguard")
REPO_ROOT = Path(__file__).resolve().parents[2]
_TAG_PID_CHARS = 4
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_lab_counter = 0  # per-process; part of the lab tag
_counter_lock = threading.Lock()

NAT_KINDS = ("none", "easy", "hard", "udp-blocked")

Cmd = Sequence[str] | str
T = TypeVar("T")


class LabError(RuntimeError):
    """A lab operation failed (the message includes the command and its output)."""


def _b36(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tag_pid(tag: str) -> int | None:
    try:
        return int(tag[:_TAG_PID_CHARS], 36)
    except ValueError:
        return None


def _sh(cmd: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} -> rc={p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def _argv(cmd: Cmd) -> list[str]:
    return ["sh", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]


def list_namespaces() -> list[str]:
    p = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def kill_namespace(ns: str) -> None:
    """Kill every process in `ns` (SIGKILL, repeated until none is left) and delete it."""
    for _ in range(20):
        p = _sh(["ip", "netns", "pids", ns], check=False)
        pids = [int(x) for x in p.stdout.split() if x.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _sh(["ip", "netns", "del", ns], check=False)


def sweep_stale(prefix: str = NS_PREFIX) -> list[str]:
    """Remove lab namespaces and UAPI sockets left behind by dead processes; returns what was removed."""
    removed = []
    for ns in list_namespaces():
        if not ns.startswith(prefix):
            continue
        pid = _tag_pid(ns[len(prefix) :])
        if pid is not None and _pid_alive(pid):
            continue
        kill_namespace(ns)
        removed.append(ns)
    if UAPI_DIR.is_dir():
        for sock in UAPI_DIR.glob(f"{WG_IF_PREFIX}*.sock"):
            pid = _tag_pid(sock.name[len(WG_IF_PREFIX) :])
            if pid is not None and _pid_alive(pid):
                continue
            with contextlib.suppress(OSError):
                sock.unlink()
                removed.append(str(sock))
    return removed


_LOG_SEQ = itertools.count()


def poll_until(ready: Callable[[], T], timeout: float, interval: float = 0.1) -> T | None:
    """Call ``ready()`` every ``interval`` s until it returns something truthy (returned) or ``timeout`` s pass (None).

    ``ready`` is called at least once; a last time after the deadline has passed.
    """
    deadline = time.monotonic() + timeout
    while not (v := ready()) and time.monotonic() <= deadline:
        time.sleep(interval)
    return v or None


async def apoll_until(ready: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """``poll_until`` in a coroutine: ``asyncio.sleep`` between the calls, so the event loop keeps running."""
    deadline = time.monotonic() + timeout
    while not (v := ready()) and time.monotonic() <= deadline:
        await asyncio.sleep(interval)
    return v or None


def wait_ready(
    ready: Callable[[], T],
    *,
    what: str,
    until: str,
    proc: subprocess.Popen | None = None,
    timeout: float = 30,
    interval: float = 0.1,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll ``ready()`` until truthy and return that; LabError (with the log tail) if ``proc`` exits or time runs out.

    ``what`` names the process ("headscale"), ``until`` the readiness check ("GET /health answers");
    ``log`` defaults to the log file of ``proc``.
    """

    def tail() -> str:
        text = log() if log is not None else Host.log_of(proc) if proc is not None else ""
        return text[-3000:]

    def check() -> T:
        v = ready()
        if not v and proc is not None and proc.poll() is not None:
            raise LabError(f"{what} exited rc={proc.returncode}: {tail()}")
        return v

    v = poll_until(check, timeout, interval)
    if v is None:
        raise LabError(f"{what} not ready after {timeout}s ({until}): {tail()}")
    return v


def stop_process(proc: subprocess.Popen | None, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGTERM) to ``proc`` if it still runs; SIGKILL it when it has not exited after ``timeout`` s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Host:
    """One lab host: a network namespace with lo up; run/popen execute inside it."""

    def __init__(self, lab: "Lab", name: str, ns: str):
        self.lab = lab
        self.name = name
        self.ns = ns
        self.addrs: list[str] = []  # interface addresses without prefix length, in assignment order
        self.addrs6: list[str] = []
        self._ifcount = 0
        self._procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, addrs={self.addrs})"

    @property
    def addr(self) -> str:
        """First IPv4 address assigned to this host (LabError if none)."""
        if not self.addrs:
            raise LabError(f"host {self.name} has no IPv4 address")
        return self.addrs[0]

    @property
    def addr6(self) -> str:
        if not self.addrs6:
            raise LabError(f"host {self.name} has no IPv6 address")
        return self.addrs6[0]

    def next_ifname(self, base: str = "eth") -> str:
        name = f"{base}{self._ifcount}"
        self._ifcount += 1
        return name

    def wrap(self, cmd: Cmd) -> list[str]:
        """The argv that runs `cmd` inside this host."""
        return ["ip", "netns", "exec", self.ns, *_argv(cmd)]

    def run(
        self,
        cmd: Cmd,
        check: bool = True,
        timeout: float = 60,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run `cmd` to completion in this host; raises LabError (with output) on failure when check."""
        full_env = {**os.environ, **(env or {})}
        if isinstance(input, bytes):
            text = False
        p = subprocess.run(self.wrap(cmd), capture_output=True, text=text, timeout=timeout, input=input, env=full_env)
        if check and p.returncode != 0:
            err = p.stderr if text else p.stderr.decode(errors="replace")
            out = p.stdout if text else p.stdout.decode(errors="replace")
            raise LabError(
                f"[{self.name}] {shlex.join(_argv(cmd))} -> rc={p.returncode}\n"
                f"stdout: {out.strip()[-2000:]}\nstderr: {err.strip()[-2000:]}"
            )
        return p

    def popen(
        self,
        cmd: Cmd,
        env: dict[str, str] | None = None,
        stdout: IO | int | None = None,
        stderr: IO | int | None = None,
        stdin: IO | int | None = subprocess.DEVNULL,
        **kw,
    ) -> subprocess.Popen:
        """Start `cmd` in this host; tracked and killed on teardown.

        By default stdout+stderr go to a log file under lab.dir; its path is `proc.log_path`
        (use `Host.log_of(proc)` to read it).
        """
        log_path = None
        if stdout is None:
            n = next(_LOG_SEQ)  # unique even when several threads start processes at once
            log_path = self.lab.dir / f"{self.name}-{n}-{Path(_argv(cmd)[0]).name}.log"
            stdout = open(log_path, "wb")
            if stderr is None:
                stderr = subprocess.STDOUT
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            self.wrap(cmd),
            env=full_env,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            start_new_session=True,
            **kw,
        )
        if log_path is not None:
            stdout.close()  # the child holds its own descriptor
        proc.log_path = log_path  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    @staticmethod
    def wait_log(proc: subprocess.Popen, text: str, timeout: float = 20) -> None:
        """Wait until ``proc``'s log holds ``text``; LabError with the log tail if it exits or time runs out."""
        wait_ready(
            lambda: text in Host.log_of(proc),
            what=f"process {proc.pid}",
            until=f"{text!r} in its log",
            proc=proc,
            timeout=timeout,
            interval=0.05,
        )

    @staticmethod
    def log_of(proc: subprocess.Popen) -> str:
        path = getattr(proc, "log_path", None)
        if path is None or not Path(path).exists():
            return ""
        return Path(path).read_text(errors="replace")

    def python_argv(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def exec_python(
        self, code: str, *args: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run a Python snippet (the venv interpreter, repo on sys.path) in this host."""
        env = {"PYTHONPATH": str(REPO_ROOT), **(env or {})}
        return self.run([sys.executable, "-c", code, *args], check=check, timeout=timeout, env=env)

    def popen_python(
        self, code_or_path: str, *args: str, env: dict[str, str] | None = None, module: bool = False, **kw
    ) -> subprocess.Popen:
        """Start Python in this host: a script path, `-m module` if module=True, else a code snippet."""
        env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        if module:
            argv = [sys.executable, "-m", code_or_path, *args]
        elif code_or_path.endswith(".py") and Path(code_or_path).exists():
            argv = [sys.executable, code_or_path, *args]
        else:
            argv = [sys.executable, "-c", code_or_path, *args]
        return self.popen(argv, env=env, **kw)

    def sysctl(self, key: str, value: str | int) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def add_route(self, dst: str, via: str | None = None, dev: str | None = None) -> None:
        fam = "-6" if ":" in dst or (via and ":" in via) else "-4"
        cmd = ["ip", fam, "route", "replace", dst]
        if via:
            cmd += ["via", via]
        if dev:
            cmd += ["dev", dev]
        self.run(cmd)

    def set_default_route(self, via: str) -> None:
        self.add_route("default", via=via) if ":" not in via else self.run(
            ["ip", "-6", "route", "replace", "default", "via", via]
        )

    def add_addr(self, ifname: str, cidr: str) -> None:
        ip = ipaddress.ip_interface(cidr)
        flags = ["nodad"] if ip.version == 6 else []
        self.run(["ip", "addr", "add", cidr, "dev", ifname, *flags])
        (self.addrs6 if ip.version == 6 else self.addrs).append(str(ip.ip))

    def del_addr(self, ifname: str, cidr: str) -> None:
        ip = ipaddress.ip_interface(cidr)
        self.run(["ip", "addr", "del", cidr, "dev", ifname])
        lst = self.addrs6 if ip.version == 6 else self.addrs
        with contextlib.suppress(ValueError):
            lst.remove(str(ip.ip))

    def wait_for(self, predicate_cmd: Cmd, timeout: float = 10, interval: float = 0.1) -> None:
        """Poll `predicate_cmd` in this host until it exits 0 (LabError after timeout)."""
        last: list[subprocess.CompletedProcess] = []

        def ok() -> bool:
            last[:] = [self.run(predicate_cmd, check=False, timeout=max(1.0, timeout))]
            return last[0].returncode == 0

        wait_ready(
            ok,
            what=f"[{self.name}] {predicate_cmd!r}",
            until="exits 0",
            timeout=timeout,
            interval=interval,
            log=lambda: last[0].stderr.strip(),
        )

    def ping(self, addr: str, count: int = 1, timeout: float = 5) -> subprocess.CompletedProcess:
        return self.run(
            ["ping", "-c", str(count), "-W", str(int(timeout)), "-i", "0.2", addr],
            check=False,
            timeout=timeout * count + 5,
        )

    def wait_ping(self, addr: str, timeout: float = 20) -> bool:
        """Ping `addr` (one probe, 1 s wait) until it answers, e.g. during a handshake; False after `timeout` s."""
        return poll_until(lambda: self.ping(addr, timeout=1).returncode == 0, timeout, interval=0.2) is not None

    def stop_processes(self, grace: float = 3.0) -> None:
        """SIGTERM tracked processes, SIGKILL after `grace` seconds."""
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=2)


class Switch:
    """A flat L2 segment: a bridge `br0` in its own namespace; hosts attach with veths."""

    def __init__(self, lab: "Lab", name: str, host: Host):
        self.lab = lab
        self.name = name
        self.host = host  # the switch's namespace
        self._ports = 0
        host.run(["ip", "link", "add", "br0", "type", "bridge"])
        host.run(["ip", "link", "set", "br0", "up"])

    def attach(self, host: Host, addr: str | None = None, addr6: str | None = None, ifname: str | None = None) -> str:
        """Plug `host` into the switch; returns the host-side interface name."""
        port = f"p{self._ports}"
        self._ports += 1
        ifname = ifname or host.next_ifname()
        self.lab._veth(self.host, port, host, ifname)
        self.host.run(["ip", "link", "set", port, "master", "br0"])
        self.host.run(["ip", "link", "set", port, "up"])
        if addr:
            host.add_addr(ifname, addr)
        if addr6:
            host.add_addr(ifname, addr6)
        host.run(["ip", "link", "set", ifname, "up"])
        return ifname


class Router:
    """A NAT router: a host with `wan` and a LAN bridge `lan`, nftables rules by NAT kind."""

    def __init__(self, lab: "Lab", host: Host, kind: str, wan_addr: str, lan_subnet: str):
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}; expected one of {NAT_KINDS}")
        self.lab = lab
        self.host = host
        self.kind = kind
        self.wan_cidr = wan_addr
        self.lan_net = ipaddress.ip_network(lan_subnet)
        hosts = self.lan_net.hosts()
        self.lan_addr = str(next(hosts))
        self._free = hosts
        self._udp_blocked = False
        host.run(["ip", "link", "add", "lan", "type", "bridge"])
        host.run(["ip", "addr", "add", f"{self.lan_addr}/{self.lan_net.prefixlen}", "dev", "lan"])
        host.run(["ip", "link", "set", "lan", "up"])
        host.sysctl("net.ipv4.ip_forward", 1)
        self._apply_rules()
        if kind == "udp-blocked":
            self.block_udp(True)

    @property
    def wan_addr(self) -> str:
        return str(ipaddress.ip_interface(self.wan_cidr).ip)

    def _apply_rules(self) -> None:
        masq = {"none": None, "easy": "masquerade", "hard": "masquerade random", "udp-blocked": "masquerade"}[self.kind]
        rules = "add table ip mvlnat\nflush table ip mvlnat\n"
        rules += "add chain ip mvlnat post { type nat hook postrouting priority 100 ; }\n"
        if masq:
            rules += f'add rule ip mvlnat post oifname "wan" {masq}\n'
            # Like a home router: unsolicited UDP to the router itself is dropped. Otherwise the
            # kernel confirms a conntrack entry for a peer's early probe, and masquerade then
            # picks a *different* port for the client's own flow to that peer.
            rules += (
                "add table inet mvlrfw\nflush table inet mvlrfw\n"
                "add chain inet mvlrfw input { type filter hook input priority 0 ; }\n"
                'add rule inet mvlrfw input iifname "wan" meta l4proto udp ct state new drop\n'
            )
        self.host.run(["nft", "-f", "-"], input=rules)

    def add_host(self, host: Host, addr: str | None = None) -> str:
        """Attach `host` to the LAN at `addr` (next free if None), default route via the router; returns its address."""
        ip = addr or str(next(self._free))
        port = f"lp{self.host._ifcount}"
        self.host._ifcount += 1
        ifname = host.next_ifname()
        self.lab._veth(self.host, port, host, ifname)
        self.host.run(["ip", "link", "set", port, "master", "lan"])
        self.host.run(["ip", "link", "set", port, "up"])
        host.add_addr(ifname, f"{ip}/{self.lan_net.prefixlen}")
        host.run(["ip", "link", "set", ifname, "up"])
        host.set_default_route(self.lan_addr)
        return ip

    def block_udp(self, blocked: bool = True) -> None:
        """Drop (True) or allow (False) all forwarded UDP."""
        if blocked:
            rules = (
                "add table inet mvlfilt\nflush table inet mvlfilt\n"
                "add chain inet mvlfilt fwdudp { type filter hook forward priority 0 ; }\n"
                "add rule inet mvlfilt fwdudp meta l4proto udp drop\n"
            )
            self.host.run(["nft", "-f", "-"], input=rules)
        else:
            self.host.run(["nft", "delete", "table", "inet", "mvlfilt"], check=False)
        self._udp_blocked = blocked

    def flush_conntrack(self) -> None:
        """Forget every NAT mapping (as if the router rebooted)."""
        self.host.exec_python("from pyroute2 import Conntrack\nc = Conntrack()\nc.flush()\nc.close()")

    def change_wan_address(self, new_cidr: str) -> None:
        """Move the WAN address (keeping the default route's gateway) and flush NAT mappings."""
        routes = self.host.run(["ip", "-4", "route", "show", "default"]).stdout.strip()
        self.host.del_addr("wan", self.wan_cidr)
        self.host.add_addr("wan", new_cidr)
        self.wan_cidr = new_cidr
        if routes:
            parts = routes.split()
            if "via" in parts:
                self.host.set_default_route(parts[parts.index("via") + 1])
        self.flush_conntrack()

    def conntrack_entries(self) -> str:
        """The router's conntrack table (`conntrack -L` text when the tool exists, else pyroute2 dicts)."""
        if shutil.which("conntrack"):
            return self.host.run(["conntrack", "-L"], check=False).stdout
        return self.host.exec_python(
            "from pyroute2 import Conntrack\nc = Conntrack()\n[print(e) for e in c.dump()]\nc.close()"
        ).stdout


class Lab:
    """A set of namespaces with links between them; a context manager that always tears down."""

    def __init__(self, sweep: bool = True, keep_logs: bool = False):
        global _lab_counter
        pid_part = _b36(os.getpid() % 36**_TAG_PID_CHARS, _TAG_PID_CHARS)
        existing = list_namespaces()
        with _counter_lock:
            for _ in range(36):  # skip a tag whose namespaces a failed teardown left behind
                n = _lab_counter
                _lab_counter = (_lab_counter + 1) % 36
                if not any(ns.startswith(f"{NS_PREFIX}{pid_part}{_B36[n]}-") for ns in existing):
                    break
        self.tag = pid_part + _B36[n]
        self.prefix = f"{NS_PREFIX}{self.tag}-"
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, Switch] = {}
        self.routers: dict[str, Router] = {}
        self._ifnames = 0
        self._sweep = sweep
        self._old_handlers: dict[int, object] = {}
        self._closed = False
        self.keep_logs = keep_logs
        self.dir = Path(tempfile.mkdtemp(prefix=f"mvl{self.tag}-"))
        self._cleanups: list = []

    # --- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Lab":
        if self._sweep:
            sweep_stale()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_signal(self, signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def add_cleanup(self, fn, *args) -> None:
        """Run fn(*args) at teardown, before processes are killed (LIFO)."""
        self._cleanups.append((fn, args))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for fn, args in reversed(self._cleanups):
                with contextlib.suppress(Exception):
                    fn(*args)
            for h in self.hosts.values():
                h.stop_processes()
            for h in self.hosts.values():
                kill_namespace(h.ns)
            if UAPI_DIR.is_dir():
                for sock in UAPI_DIR.glob(f"{WG_IF_PREFIX}{self.tag}*.sock"):
                    with contextlib.suppress(OSError):
                        sock.unlink()
            if not self.keep_logs:
                shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            for sig, h in self._old_handlers.items():
                with contextlib.suppress(Exception):
                    signal.signal(sig, h)
            self._old_handlers.clear()

    # --- building --------------------------------------------------------------
    def ifname(self, base: str = "wg") -> str:
        """A machine-wide unique interface name for this lab (for TUN/WireGuard devices whose UAPI socket is global)."""
        name = f"{WG_IF_PREFIX}{self.tag}{_b36(self._ifnames, 2 if self._ifnames >= 36 else 1)}"
        self._ifnames += 1
        return name

    def _ns_name(self, name: str) -> str:
        base = self.prefix + "".join(c for c in name if c.isalnum())[:6]
        ns, i = base, 0
        existing = {h.ns for h in self.hosts.values()}
        while ns in existing:
            i += 1
            ns = base[: 15 - len(str(i))] + str(i)
        return ns[:15]

    def host(self, name: str) -> Host:
        """Create a host (namespace) with lo up and sane sysctls."""
        if name in self.hosts:
            raise LabError(f"host {name!r} exists")
        if self._closed:
            raise LabError("lab is closed")
        ns = self._ns_name(name)
        _sh(["ip", "netns", "add", ns])
        h = Host(self, name, ns)
        self.hosts[name] = h
        h.run(["ip", "link", "set", "lo", "up"])
        h.run(
            [
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.ping_group_range=0 2147483647",
                "net.ipv6.conf.all.forwarding=0",
            ]
        )
        return h

    def _veth(self, a: Host, a_if: str, b: Host, b_if: str) -> None:
        _sh(["ip", "link", "add", a_if, "netns", a.ns, "type", "veth", "peer", "name", b_if, "netns", b.ns])

    def link(
        self,
        a: Host,
        b: Host,
        a_addr: str | None = None,
        b_addr: str | None = None,
        *,
        a_addr6: str | None = None,
        b_addr6: str | None = None,
        a_ifname: str | None = None,
        b_ifname: str | None = None,
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """A veth cable between a and b with the given CIDR addresses; returns (ifname_a, ifname_b)."""
        ia = a_ifname or a.next_ifname()
        ib = b_ifname or b.next_ifname()
        self._veth(a, ia, b, ib)
        for h, i, v4, v6 in ((a, ia, a_addr, a_addr6), (b, ib, b_addr, b_addr6)):
            if mtu:
                h.run(["ip", "link", "set", i, "mtu", str(mtu)])
            if v4:
                h.add_addr(i, v4)
            if v6:
                h.add_addr(i, v6)
            h.run(["ip", "link", "set", i, "up"])
        return ia, ib

    def switch(self, name: str) -> Switch:
        """A flat L2 segment (bridge in a dedicated namespace); attach hosts with `sw.attach(host, addr)`."""
        sw = Switch(self, name, self.host(f"sw{name}"))
        self.switches[name] = sw
        return sw

    def nat_router(
        self,
        name: str,
        kind: str,
        wan: "Host | Switch",
        wan_addr: str,
        lan_subnet: str,
        *,
        wan_gateway: str | None = None,
        wan_peer_addr: str | None = None,
    ) -> Router:
        """A router host `name` whose `wan` connects to a host or switch and whose LAN is `lan_subnet`.

        kind: "none" (routing only), "easy" (masquerade, port-preserving), "hard" (masquerade
        random: a new random port per destination), "udp-blocked" (masquerade + forwarded UDP dropped).
        If `wan` is a Host, it gets `wan_peer_addr` (default: the .1 of wan_addr's subnet, or .254
        if the router is .1) on the cable and a route to the LAN when kind == "none".
        """
        if kind not in NAT_KINDS:
            raise ValueError(f"unknown NAT kind {kind!r}; expected one of {NAT_KINDS}")
        rh = self.host(name)
        iface = ipaddress.ip_interface(wan_addr)
        if isinstance(wan, Switch):
            wan.attach(rh, wan_addr, ifname="wan")
        else:
            if wan_peer_addr is None:
                first = iface.network.network_address + 1
                peer_ip = first if first != iface.ip else iface.network.broadcast_address - 1
                wan_peer_addr = f"{peer_ip}/{iface.network.prefixlen}"
            self.link(rh, wan, wan_addr, wan_peer_addr, a_ifname="wan")
            if kind == "none":
                wan.add_route(lan_subnet, via=str(iface.ip))
        if wan_gateway:
            rh.set_default_route(wan_gateway)
        r = Router(self, rh, kind, wan_addr, lan_subnet)
        self.routers[name] = r
        return r


__all__ = [
    "Lab",
    "Host",
    "Switch",
    "Router",
    "LabError",
    "sweep_stale",
    "list_namespaces",
    "NAT_KINDS",
    "wait_ready",
    "poll_until",
    "apoll_until",
    "stop_process",
]
