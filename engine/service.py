"""`mesh-helper serve`: the privileged helper daemon (LocalAPI on a Unix socket + IPN backend + engine).

Start-up:   parse flags → recover leftovers of a crashed run (hygiene journal) → engine (the composition
            root, real_engine: System.linux() + EngineOptions → TailnetEngine, which composes a
            UserspaceEngine per session) → backend → LocalAPI socket → sd_notify READY=1
            (tests inject another engine through main(argv, engine_factory=...); there is no flag for it)
Shut-down (SIGTERM/SIGINT, or POST /localapi/v0/shutdown by root), reverse order via AsyncExitStack:
            stop accepting + end watchers → backend (engine.stop: data plane, router/DNS restore,
            TUN close) → engine.aclose → revert anything still journaled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from engine.fs.trustedpath import check_dir, check_file_path, first_refusal
from engine.ipn.engine_api import NodeEngine
from engine.ipn.local import Backend
from engine.ipn.store import FileStore, MemoryStore, StoreError
from engine.localapi.auth import Authorizer, Operator
from engine.localapi.client import DEFAULT_SOCKET
from engine.localapi.server import LocalAPIServer, SocketInUse, SocketPathError
from engine.recovery.journal import DEFAULT_JOURNAL, Journal, OwnChanges
from engine.wgengine.options import DEFAULT_DERP_REGION, DEFAULT_MTU, DEFAULT_TUN, DNS_MODES, EngineOptions

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_IN_USE = 0, 1, 2, 3

# Builds the engine the backend drives from the frozen start-up settings, the helper's journal and a logger.
EngineFactory = Callable[[EngineOptions, Journal, logging.Logger], NodeEngine]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="mesh-helper serve", description="Run the meshvpn privileged helper (LocalAPI daemon)."
    )
    p.add_argument(
        "--socket", default=os.environ.get("MESHVPN_SOCKET", DEFAULT_SOCKET), help="LocalAPI Unix socket path"
    )
    p.add_argument(
        "--operator", default="", metavar="USER|:GROUP", help="user (or :group) allowed to change settings without root"
    )
    p.add_argument(
        "--state",
        default="",
        metavar="FILE",
        help="headless mode: keep prefs AND private keys in this root-only (0600) file",
    )
    p.add_argument(
        "--prefs",
        default="",
        metavar="FILE",
        help="keep prefs (never keys) in this file across restarts (GUI mode; e.g. /var/lib/meshvpn/prefs.json)",
    )
    p.add_argument("--tun", default=DEFAULT_TUN, metavar="NAME", help="TUN interface name")
    p.add_argument("--port", type=int, default=0, metavar="N", help="UDP port for WireGuard and disco (0 = random)")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU, help=f"TUN MTU (default {DEFAULT_MTU})")
    p.add_argument(
        "--dns-mode",
        choices=DNS_MODES,
        default="auto",
        help="how OS DNS is configured: systemd-resolved when running, else resolv.conf (auto)",
    )
    p.add_argument(
        "--run-dir",
        default="",
        metavar="DIR",
        help="the engine's run directory (default: the journal's directory); OS changes are all "
        "journaled in the one --journal",
    )
    p.add_argument("--derp-region", type=int, default=DEFAULT_DERP_REGION, help=argparse.SUPPRESS)
    p.add_argument("--endpoint-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--map-watchdog", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--journal", default=DEFAULT_JOURNAL, help=argparse.SUPPRESS)
    p.add_argument("--socket-mode", default="0666", help=argparse.SUPPRESS)
    p.add_argument(
        "--cleanup-only",
        action="store_true",
        help="undo what a crashed run left behind (journal), then exit (systemd ExecStopPost); "
        "pass the same --tun as the run",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    try:
        mode = int(args.socket_mode, 8)
    except ValueError:
        p.error(f"--socket-mode {args.socket_mode!r} is not an octal mode")
    if not 0 <= mode <= 0o777:
        p.error(f"--socket-mode {args.socket_mode!r} is not a file mode")
    problem = check_paths(args)
    if problem:
        p.error(problem)
    try:
        engine_options(args)
    except ValueError as e:
        p.error(str(e))
    return args


def run_dir(args: argparse.Namespace) -> Path:
    """The engine's run directory (EngineOptions.run_dir): --run-dir, else beside the helper's journal."""
    return Path(args.run_dir) if args.run_dir else Path(args.journal).parent


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The engine's frozen start-up settings from the command line (ValueError on bad values)."""
    return EngineOptions(
        tun_name=args.tun,
        listen_port=args.port,
        mtu=args.mtu,
        derp_region=args.derp_region,
        dns_mode=args.dns_mode,
        run_dir=run_dir(args),
        endpoint_interval=args.endpoint_interval,
        map_watchdog=args.map_watchdog,
    )


def check_paths(args: argparse.Namespace) -> str | None:
    """Refuse files (journal, state, prefs, socket) in a place another local user can write.

    The helper runs as root: a journal, state or prefs file a user could plant or swap would make root
    read (and "restore") attacker-chosen content, and a socket there could be replaced under us. An
    existing journal itself is checked (owner, mode) when it is recovered, and moved aside if bad.
    """
    checks = [
        ("--journal", args.journal, lambda p: check_dir(Path(p).absolute().parent)),  # file: at recovery
        ("--state", args.state, check_file_path),
        ("--prefs", args.prefs, check_file_path),
        ("--socket", args.socket, check_file_path),
        ("--run-dir", args.run_dir, check_dir),
    ]
    return first_refusal(checks)


def own_changes(args: argparse.Namespace) -> OwnChanges:
    """What this helper's journal may undo: its own TUN (plus the fixed table, rules, nft table, sysctls,
    resolv.conf)."""
    return OwnChanges.for_tun(args.tun)


def _sd_notify(msg: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


def real_engine(options: EngineOptions, journal: Journal, log: logging.Logger) -> NodeEngine:
    """The composition root (the product's EngineFactory): System.linux() + EngineOptions -> TailnetEngine."""
    try:
        from engine.ipn.tailnet_engine import TailnetEngine
        from engine.system import System
    except ImportError as e:
        raise SystemExit(f"mesh-helper serve: the real engine is not available in this build ({e})")
    return TailnetEngine(options, System.linux(), journal=journal, logger=log)


async def _step(log: logging.Logger, what: str, close: Any, timeout: float) -> None:
    """One shutdown step, bounded: a stuck subsystem must not keep the others from restoring the system."""
    log.debug("shutdown: closing %s", what)
    try:
        async with asyncio.timeout(timeout):
            await close()
    except asyncio.TimeoutError:
        log.error("shutdown: %s did not close within %.0fs; continuing", what, timeout)
    except Exception:  # noqa: BLE001 - keep unwinding
        log.exception("shutdown: closing %s failed", what)
    else:
        log.debug("shutdown: %s closed", what)


def new_journal(args: argparse.Namespace) -> Journal:
    """The helper's one journal of OS changes (recovered at start, then handed to the engine's subsystems)."""
    return Journal(args.journal, logger=logging.getLogger("meshvpn.hygiene"), own=own_changes(args))


def recover_leftovers(
    args: argparse.Namespace, log: logging.Logger, *, subsystems: bool = True, journal: Journal | None = None
) -> tuple[int, int]:
    """Undo what a crashed previous run left: everything its journal names (TUN, exit-node rules/routes,
    nft table + forwarding sysctls, resolv.conf), then what the subsystems find unrecorded in the live system.

    The live-system cleanups (a leftover `inet meshvpn` table, our rules and table-52 routes) run only
    for the real engine (`subsystems`): they inspect the current network namespace, which an injected
    test engine never touches.
    """
    journal = journal if journal is not None else new_journal(args)
    rep = journal.recover()
    undone, failed = len(rep.undone), len(rep.failed)
    if not subsystems:
        return undone, failed
    cleaners: list[tuple[str, Any]] = []
    with contextlib.suppress(ImportError):
        from engine.router.exitnode import ExitRouter

        cleaners.append(("exit-node routes", lambda: ExitRouter(journal=journal).cleanup_leftovers()))
    with contextlib.suppress(ImportError):
        from engine.router.nft import Forwarder

        cleaners.append(("forwarding", lambda: Forwarder(journal=journal).cleanup_leftovers()))
    for what, clean in cleaners:
        try:
            done = clean()
        except Exception as e:  # noqa: BLE001 - one subsystem must not block the others' cleanup
            log.error("cleanup of %s leftovers failed: %s", what, e)
            failed += 1
            continue
        undone += len(done)
    return undone, failed


def ensure_socket_dir(path: str, log: logging.Logger) -> None:
    """The socket's directory must let local users reach the socket (0755); other subsystems may create it 0700."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, mode=0o755, exist_ok=True)
    st = os.stat(d)
    if st.st_uid == os.geteuid() and (st.st_mode & 0o005) != 0o005 and not d.startswith(("/tmp", "/var/tmp")):
        log.warning("socket directory %s had mode %o; making it 0755 so local users can connect", d, st.st_mode & 0o777)
        os.chmod(d, 0o755)


async def serve(args: argparse.Namespace, engine_factory: EngineFactory | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT or a shutdown request.

    engine_factory builds the engine the backend drives: None is the product's (real_engine); a test passes
    its own, and then start-up leaves the subsystems' leftovers alone (see recover_leftovers).
    """
    log = logging.getLogger("meshvpn.helper")
    ensure_socket_dir(args.socket, log)
    journal = new_journal(args)
    undone, failed = recover_leftovers(args, log, subsystems=engine_factory is None, journal=journal)
    if undone or failed:
        log.warning("cleaned up after a previous run: %d undone, %d failed", undone, failed)
    if args.state:
        store: Any = FileStore(args.state, keep_keys=True)
    elif args.prefs:
        store = FileStore(args.prefs, keep_keys=False)
    else:
        store = MemoryStore()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(lambda: journal.revert_all())  # runs last
            engine = (engine_factory or real_engine)(engine_options(args), journal, log)
            stack.push_async_callback(_step, log, "engine", engine.aclose, 25.0)
            # GUI mode with saved prefs (--prefs; keys live in the GUI's keyring): after a restart a saved login
            # waits for the GUI's keys instead of connecting as a brand-new node under generated ones
            backend = Backend(
                engine,
                store=store,
                logger=logging.getLogger("meshvpn.backend"),
                generate_keys=not (args.prefs and not args.state),
            )
            stack.push_async_callback(_step, log, "backend", backend.aclose, 30.0)
            await backend.start()
            auth = Authorizer(Operator(args.operator), pref_operator=lambda: backend.prefs.operator_user)
            server = LocalAPIServer(
                backend,
                auth,
                args.socket,
                socket_mode=int(args.socket_mode, 8),
                logger=logging.getLogger("meshvpn.localapi"),
                on_shutdown_request=stop.set,
            )
            await server.start()
            stack.push_async_callback(_step, log, "LocalAPI", server.aclose, 10.0)  # runs first
            _sd_notify("READY=1")
            log.info("mesh-helper ready (socket %s, state %s)", args.socket, backend.state.go_name)
            await stop.wait()
            log.info("shutting down")
            _sd_notify("STOPPING=1")
    except (SocketInUse, SocketPathError) as e:
        log.error("%s", e)
        return EXIT_IN_USE
    except StoreError as e:
        log.error("%s", e)
        return EXIT_ERROR
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_OK


def main(argv: list[str] | None = None, *, engine_factory: EngineFactory | None = None) -> int:
    """`mesh-helper serve` with the real engine; tests pass their own engine_factory (the only seam: no flag)."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("hpack", "h2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps stacks to stderr
    if args.state and os.geteuid() != 0 and not os.environ.get("MESH_TESTING"):
        print("mesh-helper serve: --state needs root (the file holds private keys)", file=sys.stderr)
        return EXIT_USAGE
    if args.cleanup_only:
        undone, failed = recover_leftovers(args, logging.getLogger("meshvpn.helper"), subsystems=engine_factory is None)
        print(f"mesh-helper: cleanup: {undone} undone, {failed} failed", file=sys.stderr)
        return EXIT_ERROR if failed else EXIT_OK
    return asyncio.run(serve(args, engine_factory))


if __name__ == "__main__":
    sys.exit(main())
