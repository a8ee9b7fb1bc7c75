"""Control client: registration (auth key / interactive AuthURL), logout, and the map long-poll with reconnect.

Lifecycle (one asyncio task runs ``ControlClient.run()``; everything else is a method call)::

    run():  loop until aclose() {
              attempt task: GET /key (once) -> dial ts2021 -> [register if not authorized] -> map long-poll
              on error: status.in_map_poll=False, last_error=..., sleep backoff (0.5 s .. 30 s, jittered)
            }

Stop it with ``await client.aclose()``: every wait in run() also watches the stop event, so
stopping never depends on a cancellation reaching the right await (see ``aclose``).

Login states (``State``) and their transitions (``_TRANSITIONS``)::

    NEW --start--> LOGGING_IN --auth_url--> WAIT_AUTH_URL --authorized--> AUTHENTICATED --map--> SYNCED
    LOGGING_IN --authorized--> AUTHENTICATED;  any --error/needs_login--> NEEDS_LOGIN
    SYNCED/AUTHENTICATED --key_expired--> NEEDS_LOGIN (then re-login with a rotated node key)
    any --logout--> LOGGED_OUT

Connection trouble does not change the login state: it shows as ``Status.in_map_poll=False``
with ``last_error`` set, and the client keeps retrying.

Events go to the injected ``on_event`` callback: ``StatusChanged``, ``AuthURL``,
``NetMapUpdated``, ``NodeKeyRotated``, ``LoginFailed``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from engine.control.mapsession import MapSession
from engine.control.mapstream import MapFramer, MapStreamError, parse_map_response
from engine.control.transport import (
    ControlConn,
    ControlTransportError,
    SocketHook,
    fetch_server_key,
    http1_request,
)
from engine.tailcfg import (
    CURRENT_CAPABILITY_VERSION,
    Hostinfo,
    MapRequest,
    NetInfo,
    PingRequest,
    RegisterAuth,
    RegisterRequest,
    RegisterResponse,
    WireError,
    decode,
    encode,
)
from engine.types.keys import DiscoPublic, MachinePrivate, MachinePublic, NLPublic, NodePrivate, NodePublic
from engine.types.netmap import NetworkMap

LOGOUT_EXPIRY = "1970-01-01T00:02:03Z"  # time.Unix(123, 0): any past expiry means logout
WATCHDOG_TIMEOUT = 120.0  # s without any map message before the stream is restarted (direct.go)
BACKOFF_BASE = 0.5  # s
BACKOFF_CAP = 30.0  # s (auto.go)
REGISTER_TIMEOUT = 30.0  # s for non-long-poll register calls
SAME_AUTH_URL_BACKOFF = 2.0  # s before re-polling when control returned the same AuthURL
STOP_TIMEOUT = 10.0  # s aclose() waits for run() to return
STOP_CANCEL_WAIT = 1.0  # s a cancelled connection attempt gets before it is cancelled again
STOP_CANCEL_TRIES = 5


class State(enum.Enum):
    NEW = "new"
    LOGGING_IN = "logging-in"
    WAIT_AUTH_URL = "wait-auth-url"  # user must visit Status.auth_url
    AUTHENTICATED = "authenticated"  # registered, map not yet received
    SYNCED = "synced"  # have a netmap
    NEEDS_LOGIN = "needs-login"  # key expired, login error, or no credentials
    LOGGED_OUT = "logged-out"


class Input(enum.Enum):
    START = "start"
    AUTH_URL = "auth_url"
    AUTHORIZED = "authorized"
    MAP = "map"
    NEEDS_LOGIN = "needs_login"
    KEY_EXPIRED = "key_expired"
    LOGOUT = "logout"
    LOGIN = "login"


S, In = State, Input
_TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.NEW, In.START): S.LOGGING_IN,
    (S.NEW, In.LOGIN): S.LOGGING_IN,
    (S.LOGGING_IN, In.AUTH_URL): S.WAIT_AUTH_URL,
    (S.LOGGING_IN, In.AUTHORIZED): S.AUTHENTICATED,
    (S.LOGGING_IN, In.NEEDS_LOGIN): S.NEEDS_LOGIN,
    (S.WAIT_AUTH_URL, In.AUTH_URL): S.WAIT_AUTH_URL,
    (S.WAIT_AUTH_URL, In.AUTHORIZED): S.AUTHENTICATED,
    (S.WAIT_AUTH_URL, In.NEEDS_LOGIN): S.NEEDS_LOGIN,
    (S.AUTHENTICATED, In.MAP): S.SYNCED,
    (S.AUTHENTICATED, In.NEEDS_LOGIN): S.NEEDS_LOGIN,
    (S.AUTHENTICATED, In.KEY_EXPIRED): S.NEEDS_LOGIN,
    (S.SYNCED, In.MAP): S.SYNCED,
    (S.SYNCED, In.NEEDS_LOGIN): S.NEEDS_LOGIN,
    (S.SYNCED, In.KEY_EXPIRED): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.LOGIN): S.LOGGING_IN,
    (S.NEEDS_LOGIN, In.START): S.LOGGING_IN,
    (S.LOGGED_OUT, In.LOGIN): S.LOGGING_IN,
}
for _s in State:
    _TRANSITIONS[(_s, In.LOGOUT)] = S.LOGGED_OUT
    _TRANSITIONS.setdefault((_s, In.START), _s)
    _TRANSITIONS.setdefault((_s, In.LOGIN), S.LOGGING_IN)
    _TRANSITIONS.setdefault((_s, In.NEEDS_LOGIN), S.NEEDS_LOGIN)
    _TRANSITIONS.setdefault((_s, In.KEY_EXPIRED), S.NEEDS_LOGIN)
    _TRANSITIONS.setdefault((_s, In.AUTHORIZED), S.AUTHENTICATED)


def next_state(state: State, inp: Input) -> State:
    """Pure transition function; unknown (state, input) pairs keep the state."""
    return _TRANSITIONS.get((state, inp), state)


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    state: State = State.NEW
    in_map_poll: bool = False  # True only while a map stream is delivering
    last_error: str | None = None
    auth_url: str | None = None
    reconnects: int = 0
    login_name: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: Status


@dataclass(frozen=True, slots=True)
class AuthURL:
    url: str


@dataclass(frozen=True, slots=True)
class NetMapUpdated:
    netmap: NetworkMap


@dataclass(frozen=True, slots=True)
class NodeKeyRotated:
    """The node key was replaced (expiry); persist ``new_private`` and reconfigure WireGuard."""

    old_public: NodePublic
    new_private: NodePrivate

    def __repr__(self) -> str:
        return f"NodeKeyRotated(old={self.old_public.short()}, new={self.new_private.public().short()})"


@dataclass(frozen=True, slots=True)
class LoginFailed:
    error: str


Event = StatusChanged | AuthURL | NetMapUpdated | NodeKeyRotated | LoginFailed


@dataclass
class ControlOptions:
    server_url: str
    machine_key: MachinePrivate
    node_key: NodePrivate
    disco_public: DiscoPublic
    hostinfo: Hostinfo
    auth_key: str | None = None
    nl_public: NLPublic | None = None
    registered_before: bool = False  # try without the auth key first (restart with known key)
    ephemeral: bool = False
    version: int = CURRENT_CAPABILITY_VERSION
    watchdog_timeout: float = WATCHDOG_TIMEOUT
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    dial_timeout: float = 15.0
    compress: bool = True
    endpoints: tuple[str, ...] = ()
    endpoint_types: tuple[int, ...] = ()
    socket_hook: SocketHook | None = None  # called on every control TCP socket before connect (SO_MARK)

    def __repr__(self) -> str:
        return (
            f"ControlOptions(server_url={self.server_url!r}, node={self.node_key.public().short()}, "
            f"auth_key={'<set>' if self.auth_key else None})"
        )


class _Interrupted(Exception):
    """Internal: the map poll was asked to stop (logout, login, key expiry)."""


class LoginError(Exception):
    pass


class _LostCancellation(Exception):
    """Internal: a connection attempt ended cancelled although nobody cancelled it (3.11 TaskGroup)."""


def _leaves(eg: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (nested) exception groups."""
    if isinstance(eg, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in eg.exceptions:
            out.extend(_leaves(e))
        return out
    return [eg]


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Exponential backoff with jitter in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d * (0.5 + 0.5 * rng())


class ControlClient:
    """Talks to one control server for one node. See the module docstring for the lifecycle."""

    def __init__(
        self,
        opts: ControlOptions,
        *,
        on_event: Callable[[Event], None] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.opts = opts
        self._on_event = on_event or (lambda ev: None)
        self._log = logger or logging.getLogger("engine.control")
        self._wall = wall_clock
        self._rng = rng
        self._server_key: MachinePublic | None = None
        self._status = Status()
        self._authorized = False
        self._old_node_key: NodePublic | None = None
        self._pending_auth_url: str | None = None
        self._want_logout = False
        self._paused_for_login = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._run_task: asyncio.Task | None = None
        self._interrupt = asyncio.Event()
        self._lite = asyncio.Event()
        self._conn: ControlConn | None = None
        self._logout_done: asyncio.Future | None = None
        self.netmap: NetworkMap | None = None
        self.maps_received = 0
        self.streams_started = 0
        self.lite_updates_sent = 0
        self.pings_answered = 0

    # -- public API ----------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    @property
    def node_key(self) -> NodePrivate:
        return self.opts.node_key

    def set_endpoints(self, endpoints: list[str] | tuple[str, ...], types: list[int] | tuple[int, ...] = ()) -> None:
        """Publish new endpoints; sent as a lite MapRequest while the stream is up."""
        eps, tys = tuple(endpoints), tuple(types) or tuple(1 for _ in endpoints)
        if eps == self.opts.endpoints and tys == self.opts.endpoint_types:
            return
        self.opts.endpoints, self.opts.endpoint_types = eps, tys
        self._lite.set()

    def set_hostinfo(self, hostinfo: Hostinfo) -> None:
        if hostinfo == self.opts.hostinfo:
            return
        self.opts.hostinfo = hostinfo
        self._lite.set()

    def set_preferred_derp(self, region: int) -> None:
        """Home DERP region for NetInfo.PreferredDERP (how peers learn our HomeDERP)."""
        hi = self.opts.hostinfo
        ni = hi.net_info
        ni = dataclasses.replace(ni, preferred_derp=region) if ni else NetInfo(preferred_derp=region)
        self.set_hostinfo(dataclasses.replace(hi, net_info=ni))

    def set_net_info(self, net_info: NetInfo) -> None:
        """Hostinfo.NetInfo from a netcheck (UDP, IPv6, mapping varies, DERP latencies, PreferredDERP)."""
        hi = self.opts.hostinfo
        self.set_hostinfo(dataclasses.replace(hi, net_info=net_info))

    def login(self, auth_key: str | None = None) -> None:
        """Start (or restart) a login: with an auth key, or interactive (AuthURL event)."""
        if auth_key is not None:
            self.opts.auth_key = auth_key
        self._want_logout = False
        self._paused_for_login = False
        self._authorized = False
        self._pending_auth_url = None
        self._transition(Input.LOGIN)
        self._interrupt.set()
        self._wake.set()

    async def logout(self, timeout: float = 15.0) -> None:
        """Send a past Expiry to control; afterwards the state is LOGGED_OUT and the netmap cleared."""
        loop = asyncio.get_running_loop()
        self._logout_done = loop.create_future()
        self._want_logout = True
        self._interrupt.set()
        self._wake.set()
        await asyncio.wait({self._logout_done}, timeout=timeout)  # never cancels the future

    async def aclose(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop ``run()`` (call from another task); it returns soon, whatever it was doing.

        Stopping does not rely on delivering a cancellation into run(): on Python 3.11 a
        TaskGroup child failing while its parent is cancelled turns the cancellation into an
        ExceptionGroup, and asyncio.wait_for can lose one that races with completion. Instead
        each connection attempt runs in its own task, and run() waits on it together with the
        stop event, as it does in every other wait (backoff, paused for login).
        """
        self._stopping = True
        self._stop.set()
        self._wake.set()
        self._interrupt.set()
        task = self._run_task
        if task is None or task.done() or task is asyncio.current_task():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self._log.error("control: client did not stop within %.0fs", timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self) -> None:
        """Run until ``aclose()`` (then returns) or cancellation (then raises CancelledError)."""
        self._run_task = asyncio.current_task()
        attempt = 0
        self._transition(Input.START)
        try:
            while not self._stopping:
                self._interrupt.clear()
                if self._paused_for_login and not self._want_logout:
                    self._wake.clear()
                    await self._wait_wake(None)
                    continue
                progressed = False
                outcome = "none"
                maps_before = self.maps_received
                try:
                    finished, outcome = await self._until_stopped(self._attempt())
                    if not finished:
                        break
                except* _Interrupted:
                    progressed = True
                except* (ControlTransportError, MapStreamError, WireError, LoginError, OSError) as eg:
                    err = "; ".join(dict.fromkeys(str(e) or type(e).__name__ for e in _leaves(eg)))
                    self._log.info("control: %s", err)
                    self._update(in_map_poll=False, last_error=err)
                except* Exception as eg:  # a bug: log it, back off, keep the node alive
                    self._log.error("control: unexpected error", exc_info=eg)
                    self._update(in_map_poll=False, last_error=f"internal error: {_leaves(eg)[0]!r}")
                finally:
                    self._conn = None
                if self._stopping:
                    break
                if outcome == "again":
                    continue
                if outcome == "progressed" or self.maps_received != maps_before:
                    progressed = True
                if self._status.in_map_poll:
                    self._update(in_map_poll=False)
                if progressed:
                    attempt = 0
                    if self._interrupt.is_set() or self._want_logout:
                        continue
                delay = backoff_delay(attempt, base=self.opts.backoff_base, cap=self.opts.backoff_cap, rng=self._rng)
                attempt += 1
                self._update(reconnects=self._status.reconnects + 1)
                self._wake.clear()
                await self._wait_wake(delay)
        finally:
            self._conn = None
            if self._status.in_map_poll:
                self._update(in_map_poll=False)

    async def _attempt(self) -> str:
        """One connection: GET /key (once), dial, then logout or login + map poll.

        Returns "again" (loop at once), "progressed" (login made progress) or "none"; a map
        poll always ends with an exception.
        """
        if self._server_key is None:
            self._server_key = await fetch_server_key(
                self.opts.server_url,
                self.opts.version,
                timeout=self.opts.dial_timeout,
                socket_hook=self.opts.socket_hook,
            )
        async with ControlConn.dial(
            self.opts.server_url,
            self.opts.machine_key,
            self._server_key,
            self.opts.version,
            timeout=self.opts.dial_timeout,
            logger=self._log,
            socket_hook=self.opts.socket_hook,
        ) as conn:
            self._conn = conn
            await conn.wait_early_payload(timeout=self.opts.dial_timeout)
            if self._want_logout:
                await self._do_logout(conn)
                return "again"
            outcome = "none"
            if not self._authorized:
                await self._login(conn)
                outcome = "progressed"
            if self._authorized and not self._paused_for_login:
                await self._map_poll(conn)
            return outcome

    async def _until_stopped(self, coro) -> tuple[bool, str]:
        """Run ``coro`` in its own task until it ends or aclose() is called.

        Returns (True, its result) or raises its exception; (False, "") when stopped (the task
        is then cancelled, again if it swallows that). A fresh task per attempt also keeps a
        cancel count that a 3.11 TaskGroup leaves raised from leaking into the next attempt.
        """
        task = asyncio.get_running_loop().create_task(coro, name="control-attempt")
        stop_wait = asyncio.get_running_loop().create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # run() itself was cancelled: take the attempt down with it
            await self._reap(task)
            raise
        finally:
            stop_wait.cancel()
        if not task.done():
            await self._reap(task)
            return False, ""
        if task.cancelled():  # nobody but _reap cancels it: a cancellation leaked out of a TaskGroup
            raise _LostCancellation("control connection attempt ended cancelled")
        return True, task.result()

    async def _reap(self, task: asyncio.Task) -> None:
        """Cancel ``task`` and wait for it, cancelling again if it swallowed a cancellation."""
        for i in range(STOP_CANCEL_TRIES):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_CANCEL_WAIT)
            if done:
                if not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" noise
                return
            self._log.warning("control: connection attempt ignored cancellation (%d); cancelling again", i + 1)
        self._log.error(
            "control: connection attempt still running after %d cancellations; abandoning it", STOP_CANCEL_TRIES
        )

    async def _wait_wake(self, timeout: float | None) -> None:
        """Wait for ``_wake`` (set by login/logout/aclose) or ``timeout``; never loses a cancellation."""
        w = asyncio.get_running_loop().create_task(self._wake.wait())
        try:
            await asyncio.wait({w}, timeout=timeout)
        finally:
            w.cancel()

    # -- internals -----------------------------------------------------------------------

    def _emit(self, ev: Event) -> None:
        try:
            self._on_event(ev)
        except Exception:  # noqa: BLE001 - a subscriber bug must not kill the client
            self._log.exception("control: event handler failed for %s", type(ev).__name__)

    def _update(self, **kw) -> None:
        new = dataclasses.replace(self._status, **kw)
        if new != self._status:
            self._status = new
            self._emit(StatusChanged(new))

    def _transition(self, inp: Input) -> None:
        old = self._status.state
        new = next_state(old, inp)
        if new != old:
            self._log.info("control: state %s -> %s (%s)", old.value, new.value, inp.value)
            extra = {}
            if new is not State.WAIT_AUTH_URL:
                extra["auth_url"] = None
            self._update(state=new, **extra)

    def _register_request(
        self, *, auth: bool, followup: str | None = None, expiry: str | None = None
    ) -> RegisterRequest:
        return RegisterRequest(
            version=self.opts.version,
            node_key=self.opts.node_key.public(),
            old_node_key=self._old_node_key or NodePublic.zero(),
            nl_key=self.opts.nl_public,
            auth=RegisterAuth(auth_key=self.opts.auth_key) if auth and self.opts.auth_key else None,
            followup=followup,
            expiry=expiry,
            hostinfo=self.opts.hostinfo,
            ephemeral=self.opts.ephemeral or None,
        )

    async def _register(self, conn: ControlConn, req: RegisterRequest, timeout: float | None) -> RegisterResponse:
        body = json.dumps(encode(req)).encode()
        resp = await conn.request("POST", "/machine/register", body, timeout=timeout)
        if resp.status != 200:
            raise LoginError(f"register: HTTP {resp.status}: {resp.body[:200].decode(errors='replace')}")
        try:
            return decode(RegisterResponse, json.loads(resp.body))
        except (ValueError, RecursionError) as e:
            raise LoginError(f"register: invalid response: {e}") from None

    async def _login(self, conn: ControlConn) -> None:
        self._transition(Input.LOGIN if self._status.state in (State.NEEDS_LOGIN, State.LOGGED_OUT) else Input.START)
        for _ in range(4):  # at most a few key rotations / auth retries per call
            if self._pending_auth_url:
                await self._wait_auth_url(conn)
                return
            use_auth = bool(self.opts.auth_key) and not self.opts.registered_before
            rr = await self._register(conn, self._register_request(auth=use_auth), REGISTER_TIMEOUT)
            if rr.error:
                if use_auth or not self.opts.auth_key:
                    self._fail_login(rr.error)
                    return
                self.opts.registered_before = False  # retry with the auth key
                continue
            if rr.node_key_expired:
                self._rotate_node_key()
                continue
            if rr.auth_url:
                if self.opts.auth_key and not use_auth:
                    self.opts.registered_before = False
                    continue
                self._pending_auth_url = rr.auth_url
                self._transition(Input.AUTH_URL)
                self._update(auth_url=rr.auth_url)
                self._emit(AuthURL(rr.auth_url))
                continue
            self._on_authorized(rr)
            return
        raise LoginError("register: gave up after repeated retries")

    async def _wait_auth_url(self, conn: ControlConn) -> None:
        """Followup long-poll until approved; a new AuthURL is surfaced and followed."""
        while True:
            url = self._pending_auth_url
            assert url is not None
            rr = await self._register(conn, self._register_request(auth=False, followup=url), None)
            if rr.error:
                self._pending_auth_url = None
                self._fail_login(rr.error)
                return
            if rr.machine_authorized and not rr.auth_url:
                self._pending_auth_url = None
                self._on_authorized(rr)
                return
            if rr.auth_url and rr.auth_url != url:
                self._pending_auth_url = rr.auth_url
                self._update(auth_url=rr.auth_url)
                self._emit(AuthURL(rr.auth_url))
                continue
            await asyncio.sleep(SAME_AUTH_URL_BACKOFF)

    def _fail_login(self, error: str) -> None:
        self._log.warning("control: login failed: %s", error)
        self._transition(Input.NEEDS_LOGIN)
        self._update(last_error=f"login: {error}")
        self._emit(LoginFailed(error))
        self._paused_for_login = True  # wait for login() rather than hammering control

    def _on_authorized(self, rr: RegisterResponse) -> None:
        self._authorized = True
        self.opts.registered_before = True
        self._old_node_key = None
        login = rr.login.login_name if rr.login else None
        self._transition(Input.AUTHORIZED)
        self._update(login_name=login, last_error=None)
        self._log.info("control: registered node %s (user %s)", self.opts.node_key.public().short(), login)

    def _rotate_node_key(self) -> None:
        old = self.opts.node_key.public()
        self._old_node_key = old
        self.opts.node_key = NodePrivate.generate()
        self._log.info("control: node key %s expired; rotated to %s", old.short(), self.opts.node_key.public().short())
        self._emit(NodeKeyRotated(old, self.opts.node_key))

    async def _do_logout(self, conn: ControlConn) -> None:
        try:
            rr = await self._register(conn, self._register_request(auth=False, expiry=LOGOUT_EXPIRY), REGISTER_TIMEOUT)
            if rr.error:
                self._log.warning("control: logout: %s", rr.error)
        finally:
            self._want_logout = False
            self._authorized = False
            self._paused_for_login = True
            self._pending_auth_url = None
            self.netmap = None
            self.opts.registered_before = False
            self._transition(Input.LOGOUT)
            if self._logout_done and not self._logout_done.done():
                self._logout_done.set_result(None)

    def _map_request(self, *, stream: bool) -> MapRequest:
        return MapRequest(
            version=self.opts.version,
            compress="zstd" if self.opts.compress else None,
            keep_alive=True,
            node_key=self.opts.node_key.public(),
            disco_key=self.opts.disco_public,
            endpoints=self.opts.endpoints,
            endpoint_types=self.opts.endpoint_types or None,
            hostinfo=self.opts.hostinfo,
            stream=stream,
            omit_peers=not stream,
        )

    async def _map_poll(self, conn: ControlConn) -> None:
        """Run one map stream until it fails or is interrupted (always ends with an exception)."""
        self._lite.clear()
        body = json.dumps(encode(self._map_request(stream=True))).encode()
        resp = await conn.open_stream("POST", "/machine/map", body, timeout=self.opts.watchdog_timeout)
        if resp.status != 200:
            err = (await resp.read_all(4096)).decode(errors="replace")[:200]
            if resp.status in (401, 403, 404):
                # node unknown to control (deleted, or key mismatch): register again
                self._authorized = False
                self.opts.registered_before = False
            raise ControlTransportError(f"map: HTTP {resp.status}: {err}")
        self.streams_started += 1
        session = MapSession(logger=self._log)
        framer = MapFramer(compressed=self.opts.compress)

        async def reader() -> None:
            while True:
                try:
                    async with asyncio.timeout(self.opts.watchdog_timeout):
                        chunk = await resp.read()
                except asyncio.TimeoutError:
                    raise ControlTransportError(
                        f"map stream watchdog: nothing received for {self.opts.watchdog_timeout:g}s"
                    ) from None
                if not chunk:
                    raise ControlTransportError(f"map stream ended ({conn.closed_reason or 'EOF'})")
                for msg in framer.feed(chunk):
                    mr = parse_map_response(msg)
                    if mr.ping_request is not None:
                        tg.create_task(self._answer_ping(conn, mr.ping_request))
                    nm = session.apply(mr, now=self._wall())
                    if nm is None:
                        continue
                    self.maps_received += 1
                    self.netmap = nm
                    if not self._status.in_map_poll or self._status.last_error:
                        self._update(in_map_poll=True, last_error=None)
                    self._transition(Input.MAP)
                    self._emit(NetMapUpdated(nm))
                    if nm.self_key_expired(self._wall()):
                        self._log.warning("control: node key expired; needs login")
                        self._authorized = False
                        self._transition(Input.KEY_EXPIRED)
                        self._rotate_node_key()
                        if not self.opts.auth_key:
                            self.opts.registered_before = False
                        raise _Interrupted()

        async def lite() -> None:
            while True:
                await self._lite.wait()
                self._lite.clear()
                req = json.dumps(encode(self._map_request(stream=False))).encode()
                r = await conn.request("POST", "/machine/map", req, timeout=30.0)
                self.lite_updates_sent += 1
                if r.status != 200:
                    self._log.info("control: lite map update: HTTP %d", r.status)

        async def interrupt() -> None:
            await self._interrupt.wait()
            raise _Interrupted()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(reader())
                tg.create_task(lite())
                tg.create_task(interrupt())
        finally:
            resp.close()
            self._update(in_map_poll=False)

    async def _answer_ping(self, conn: ControlConn, pr: PingRequest) -> None:
        if pr.types:  # disco/TSMP/ICMP pings are the data plane's business
            return
        try:
            if pr.url_is_noise:
                u = urlsplit(pr.url)
                path = (u.path or "/") + (f"?{u.query}" if u.query else "")
                await conn.request("HEAD", path, timeout=10.0)
            else:
                await http1_request(pr.url, "HEAD", timeout=10.0, socket_hook=self.opts.socket_hook)
            self.pings_answered += 1
        except (ControlTransportError, OSError) as e:
            self._log.info("control: answering PingRequest failed: %s", e)


__all__ = [
    "ControlClient",
    "ControlOptions",
    "State",
    "Input",
    "Status",
    "StatusChanged",
    "AuthURL",
    "NetMapUpdated",
    "NodeKeyRotated",
    "LoginFailed",
    "Event",
    "next_state",
    "backoff_delay",
    "LOGOUT_EXPIRY",
]
