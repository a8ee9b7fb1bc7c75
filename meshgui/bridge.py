"""The only async<->widget seam: runs the LocalAPI watch loop, reduces events into a ViewState and emits Qt signals.

    EngineClient.watch() ──(asyncio task)──► reduce() ──► stateChanged(ViewState)   (queued to widgets)
    widget clicks ──► Bridge slots ──► coroutine on the bridge's TaskGroup ──► LocalAPI

Widgets never touch the socket. Reconnects with capped backoff and reports HELPER_DOWN
meanwhile (STYLE R18). A 403 on any write turns the GUI read-only. Answers arrive as leniently
decoded schema objects: fields the helper sent in an odd shape are counted (`odd_fields`) and
logged (a warning the first time each one is seen), never a reason to reconnect. A node key rotated
by the control server (Notify.node_key_rotated) is taken out of the notification before the
reducer sees it and handed to `on_node_key_rotated` (the app stores it in the keyring): the
secret never enters the ViewState. A login URL is announced (browseTo) only if it is an https:// or
http:// address (browser_url_problem); anything else becomes an actionFailed message instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import urllib.parse
from typing import Any, Awaitable, Callable, Iterable

from PySide6.QtCore import QObject, Signal

from engine.localapi.schema import (
    EXIT_ROUTES,
    Decoded,
    FieldProblem,
    MaskedPrefs,
    NodeKeyRotation,
    Options,
    PingResult,
    Prefs,
)
from meshgui import state as st
from meshgui.engine_client import AccessDenied, EngineClient, HelperUnavailable, LocalAPIError

RECONNECT_BACKOFF = (0.5, 1.0, 2.0, 3.0)  # seconds; capped at 3 s like Tailscale's systray
PING_CONCURRENCY = 8
PING_TIMEOUT = 5.0  # seconds per peer
STATUS_COALESCE = 0.2  # seconds: Notify bursts trigger one /status fetch

BROWSER_SCHEMES = ("https", "http")  # the only URL schemes the GUI hands to a browser
MAX_URL_LENGTH = 8192
MAX_LOGGED_PROBLEMS = 200  # distinct odd fields warned about; later ones are logged at debug level only

Clock = Callable[[], dt.datetime]


def browser_url_problem(url: object) -> str:
    """ "" if `url` may be opened in a browser (an https:// or http:// address with a host); else why not."""
    if not isinstance(url, str) or not url:
        return "the address is empty"
    if len(url) > MAX_URL_LENGTH:
        return "the address is too long"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "the address contains spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "the address is malformed"
    scheme = parts.scheme.lower()
    if scheme not in BROWSER_SCHEMES:
        return f"its scheme is {scheme + ':' if scheme else 'missing'}, not https:// or http://"
    if not host:
        return "the address has no host"
    return ""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Bridge(QObject):
    """Owns the watch loop and the current ViewState; exposes user actions as slots."""

    stateChanged = Signal(object)  # ViewState
    browseTo = Signal(str)  # a login URL to open, once per URL, only after the user asked to log in
    actionFailed = Signal(str)  # a plain-words error for a user action
    helperDown = Signal(str)  # every failed (re)connection, even when the ViewState did not change

    def __init__(
        self,
        client: EngineClient,
        *,
        clock: Clock = utc_now,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        watch_mask: Callable[[], int] | None = None,
        on_node_key_rotated: Callable[[NodeKeyRotation], Awaitable[None]] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self._clock = clock
        self._log = logger or logging.getLogger("meshgui.bridge")
        self._on_connected = on_connected
        self._watch_mask = watch_mask
        self._on_node_key_rotated = on_node_key_rotated
        self._state = st.ViewState()
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        # Prefs edits go out one at a time: concurrent PATCHes could answer out of order and leave the
        # view on an older answer (three quick toggles, the last reply dispatched holding only the first).
        self._edit_lock = asyncio.Lock()
        self._status_dirty = asyncio.Event()
        self._opened_urls: set[str] = set()
        self._connected = False
        self.notify_count = 0
        self.status_fetches = 0
        self.refused_urls = 0  # login URLs not opened (not https/http)
        self.odd_fields = 0  # values in the helper's answers that could not be read (their defaults were used)
        self._warned: set[str] = set()

    # ------------------------------------------------------------ state

    @property
    def state(self) -> st.ViewState:
        return self._state

    def dispatch(self, event: st.Event) -> None:
        """Reduce one event; emit stateChanged only when the ViewState really changed."""
        new = st.reduce(self._state, event, self._clock())
        if new == self._state:
            return
        self._state = new
        if new.browse_url and new.login_pending and new.browse_url not in self._opened_urls:
            self._opened_urls.add(new.browse_url)
            problem = browser_url_problem(new.browse_url)
            if problem:
                self.refused_urls += 1
                self._log.warning("refused to open the login address from the helper: %s", problem)
                self.actionFailed.emit(
                    f"The login page was not opened: {problem}. meshvpn opens only https:// and http:// addresses."
                )
            else:
                self.browseTo.emit(new.browse_url)
        self.stateChanged.emit(new)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until stop(): the watch loop, the status refresher and every action task.

        The loops also end on their own once stop() was called, so a cancellation lost inside a
        library call (Python 3.11's wait_for drops one that races a finished read) cannot keep
        the TaskGroup waiting for ever.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._watch_loop())
                tg.create_task(self._status_loop())
                await self._stop.wait()
                raise _Stop()
        except* _Stop:
            pass
        finally:
            self._tg = None

    def stop(self) -> None:
        self._stop.set()
        self._status_dirty.set()  # wake the status loop so it sees the stop

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Schedule `coro` on the bridge's TaskGroup; errors become actionFailed, never crashes."""
        if self._tg is None:
            asyncio.ensure_future(self._guard(coro))
            return
        self._tg.create_task(self._guard(coro))

    async def _guard(self, coro: Awaitable[Any]) -> None:
        try:
            await coro
        except AccessDenied as e:
            self.dispatch(st.AccessDenied(e.body))
            self.actionFailed.emit("You are not allowed to control the VPN helper on this computer.")
        except HelperUnavailable as e:
            self.actionFailed.emit(str(e))
        except LocalAPIError as e:
            self.actionFailed.emit(e.body.strip() or str(e))
        except (OSError, ValueError) as e:  # never let one action take the watch loop down
            self._log.warning("action failed: %s", e)
            self.actionFailed.emit(str(e))

    # ------------------------------------------------------------ loops

    async def _watch_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._on_connected is not None:
                    await self._on_connected()
                self._dispatch_prefs(await self.client.get_prefs())  # before status: no default prefs
                await self.refresh()
                if self._stop.is_set():  # stopped meanwhile: never open a stream a lost cancel would keep
                    return
                self._connected = True
                self.dispatch(st.HelperUp())
                watch = self.client.watch(self._watch_mask()) if self._watch_mask else self.client.watch()
                async for decoded in watch:
                    if self._stop.is_set():
                        return
                    attempt = 0
                    self.notify_count += 1
                    n = decoded.value
                    if n.node_key_rotated is not None:
                        if self._on_node_key_rotated is not None:
                            self.spawn(self._on_node_key_rotated(n.node_key_rotated))
                        n = dataclasses.replace(n, node_key_rotated=None)
                    self._note_problems("Notify", decoded.problems)
                    self.dispatch(st.NotifyEvent(n, decoded.problems))
                    if any(x is not None for x in (n.state, n.prefs, n.net_map, n.engine, n.login_finished)):
                        self._status_dirty.set()
                raise HelperUnavailable("the helper closed the watch stream")
            except (HelperUnavailable, LocalAPIError, OSError) as e:
                if isinstance(e, AccessDenied):
                    self.dispatch(st.AccessDenied(e.body))
                self._connected = False
                self._log.info("helper unavailable: %s", e)
                self.dispatch(st.HelperDown(_plain_reason(e)))
                self.helperDown.emit(str(e))
            delay = RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)]
            attempt += 1
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            except asyncio.TimeoutError:
                pass

    async def _status_loop(self) -> None:
        while not self._stop.is_set():
            await self._status_dirty.wait()
            await asyncio.sleep(STATUS_COALESCE)
            self._status_dirty.clear()
            if not self._connected or self._stop.is_set():  # only the watch loop (re)connects, after on_connected
                continue
            try:
                await self.refresh()
            except (HelperUnavailable, LocalAPIError, OSError) as e:
                self._log.debug("status refresh failed: %s", e)

    async def refresh(self) -> None:
        """Fetch /status and reduce it."""
        status = await self.client.status()
        self.status_fetches += 1
        self._note_problems("Status", status.problems)
        self.dispatch(st.StatusEvent(status))

    def _dispatch_prefs(self, prefs: Decoded[Prefs]) -> None:
        self._note_problems("Prefs", prefs.problems)
        self.dispatch(st.PrefsEvent(prefs))

    def _note_problems(self, what: str, problems: tuple[FieldProblem, ...]) -> None:
        """Count and log the values of an answer that could not be read (their defaults were used)."""
        for p in problems:
            self.odd_fields += 1
            text = f"{what}.{p}"
            if text in self._warned or len(self._warned) >= MAX_LOGGED_PROBLEMS:
                self._log.debug("odd field from the helper (default used): %s", text)
            else:
                self._warned.add(text)
                self._log.warning("odd field from the helper (default used): %s", text)

    # ------------------------------------------------------------ actions (slots)

    def connect_vpn(self) -> None:
        self.spawn(self._edit(want_running=True))

    def disconnect_vpn(self) -> None:
        self.spawn(self._edit(want_running=False))

    def set_exit_node(self, node_id: str) -> None:
        if node_id:
            self.spawn(self._edit(exit_node_id=node_id))
        else:
            self.spawn(self._edit(exit_node_id="", exit_node_ip=""))

    def set_allow_lan(self, allow: bool) -> None:
        self.spawn(self._edit(exit_node_allow_lan_access=bool(allow)))

    def set_corp_dns(self, on: bool) -> None:
        """ "Use tailnet DNS" (Prefs.CorpDNS)."""
        self.spawn(self._edit(corp_dns=bool(on)))

    def set_route_all(self, on: bool) -> None:
        """ "Use subnet routes" (Prefs.RouteAll)."""
        self.spawn(self._edit(route_all=bool(on)))

    def set_allow_incoming(self, allow: bool) -> None:
        """ "Allow incoming connections": the inverse of Prefs.ShieldsUp."""
        self.spawn(self._edit(shields_up=not allow))

    def set_advertise_exit_node(self, on: bool) -> None:
        """ "Run as exit node": add/remove 0.0.0.0/0 and ::/0 in AdvertiseRoutes, keeping the other routes."""
        self.spawn(self._advertise_exit_node(bool(on)))

    async def _advertise_exit_node(self, on: bool) -> None:
        # Read the helper's current routes (not the ViewState's: another client may have changed them).
        prefs = await self.client.get_prefs()
        self._dispatch_prefs(prefs)
        if any(p.path[:1] == ("AdvertiseRoutes",) for p in prefs.problems):
            raise ValueError("the helper's advertised routes could not be read; they were left unchanged")
        current = list(prefs.value.advertise_routes or [])
        routes = [r for r in current if r not in EXIT_ROUTES]
        if on:
            routes += list(EXIT_ROUTES)
        if routes == current:
            return
        await self._edit(advertise_routes=routes)

    def login(self, control_url: str = "") -> None:
        """Browser SSO: start with WantRunning (and the chosen control server), then login-interactive."""
        self.dispatch(st.LoginStarted())
        self.spawn(self._login(control_url))

    def cancel_login(self) -> None:
        self.dispatch(st.LoginCancelled())

    def logout(self) -> None:
        self.spawn(self.client.logout())

    def ping_peers(self, peers: Iterable[st.PeerView]) -> None:
        ips = [p.ipv4 or p.ips[0] for p in peers if p.online and p.ips]
        if ips:
            self.spawn(self._ping_all(ips))

    async def _edit(self, **changes: Any) -> None:
        """PATCH exactly these prefs (by schema.Prefs attribute name), then show the prefs the helper answers."""
        async with self._edit_lock:
            self._dispatch_prefs(await self.client.edit_prefs(MaskedPrefs.of(**changes)))

    async def _login(self, control_url: str) -> None:
        try:
            prefs = (await self.client.get_prefs()).value
            prefs = dataclasses.replace(prefs, want_running=True, control_url=control_url or prefs.control_url)
            await self.client.start(Options(update_prefs=prefs))
            await self.client.login_interactive()
        except BaseException:
            self.dispatch(st.LoginCancelled())
            raise

    async def _ping_all(self, ips: list[str]) -> None:
        sem = asyncio.Semaphore(PING_CONCURRENCY)

        async def one(ip: str) -> None:
            async with sem:
                try:
                    async with asyncio.timeout(PING_TIMEOUT):
                        result = await self.client.ping(ip)
                except (asyncio.TimeoutError, LocalAPIError, HelperUnavailable, OSError) as e:
                    result = Decoded(PingResult(err=str(e) or "timeout"))
                self._note_problems("PingResult", result.problems)
                self.dispatch(st.PingEvent(ip, result))

        await asyncio.gather(*(one(ip) for ip in ips))


class _Stop(Exception):
    """Raised inside run()'s TaskGroup to cancel its tasks on stop()."""


def _plain_reason(e: BaseException) -> str:
    if isinstance(e, HelperUnavailable):
        return ""  # the headline already says "VPN helper not running"
    return str(e)
