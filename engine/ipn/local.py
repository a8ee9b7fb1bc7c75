"""LocalBackend (asyncio): prefs + the ipn.State machine + the IPN bus, driving a NodeEngine.

Flow (tailscaled's LocalBackend, reduced):

    LocalAPI ──edit_prefs/start/login/logout──► Backend ──start/stop/reconfigure──► NodeEngine
        ▲                                          │  ▲                                  │
        └──────── watch(mask): Notify lines ◄──────┘  └────── sink(EngineEvent) ◄────────┘

- State moves only through engine.ipn.state.StateMachine (the table); the backend turns user
  requests and engine events into Inputs, then makes the engine match the new state
  (ENGINE_WANTED ⇒ started, otherwise stopped).
- User operations are serialized by one lock; engine events are handled synchronously in the sink
  (state + notifications only); engine calls they imply are queued to a worker task.
- Prefs a LocalAPI caller asks for (PATCH prefs, start's UpdatePrefs, set-use-exit-node) pass one
  gate, _check_user_prefs: root-only fields (engine.ipn.prefs_policy, on the old→new diff), then
  validity. The caller's `actor_is_root` defaults to False.
- Private keys live in memory (NodeKeys); only public halves appear in status/notify/logs, with
  one exception: when control rotates the node key, the new private key goes on the bus
  (Notify.MeshvpnNodeKeyRotated.NodeKey) to the keys' owner only: the uid that handed them over
  with set-keys, watching without NotifyNoPrivateKeys (the LocalAPI lets only writers do that, as
  tailscaled does). Every other watcher gets the public halves. The GUI stores the key in its
  keyring and acknowledges by handing the new keys back; until then the rotation is re-offered in
  the first notification of the owner's next watch, and the superseded key, if handed over again
  by a GUI that missed it, is not allowed to replace the new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from typing import Any, AsyncIterator, Callable

from engine.ipn.backend import (
    BackendError,
    PrefsError,
    _rfc3339,
    check_prefs,
    engine_config,
    exit_node_of,
    netmap_json,
    node_json,
    peer_status,
)
from engine.ipn.dnsquery import parse_query_type, to_fqdn
from engine.ipn.engine_api import (
    AuthURL,
    EngineEvent,
    EngineFailed,
    EngineUp,
    LoggedIn,
    LoginNeeded,
    MachineAuthNeeded,
    NetMapUpdate,
    NetMapView,
    NodeEngine,
    NodeKeyRotated,
    NodeKeys,
    PeerView,
)
from engine.ipn.prefs_policy import check_change
from engine.ipn.state import ENGINE_WANTED, Input, InvalidTransition, StateMachine
from engine.ipn.store import MemoryStore, PrefsStore
from engine.localapi.schema import (
    DEFAULT_CONTROL_URL,
    INTERNAL_PREFS,
    IPN_VERSION,
    ZERO_NODEKEY,
    DNSOSConfig,
    DNSQueryResponse,
    DNSResolver,
    EngineStatus,
    ExitNodeStatus,
    KeysInfo,
    MaskedPrefs,
    NodeKeyRotation,
    Notify,
    NotifyWatchOpt,
    PeerStatus,
    Persist,
    PingResult,
    Prefs,
    SetKeysRequest,
    State,
    Status,
    TailnetStatus,
    UserProfile,
    WhoIsResponse,
)
from engine.types.keys import KeyError_, MachinePrivate, NodePrivate

ENGINE_UPDATE_INTERVAL = 2.0  # seconds between Engine (traffic/path) notifications to ENGINE_UPDATES watchers
WATCH_QUEUE_MAX = 256  # notifications buffered per watcher; a slower watcher is disconnected
PING_TIMEOUT = 10.0  # seconds the helper waits for an engine ping
DNS_QUERY_TIMEOUT = 15.0  # seconds for a dns-query (the forwarder tries each upstream for a few seconds)


class _Watcher:
    """One watch-ipn-bus subscriber: a bounded queue; RATE_LIMIT watchers get coalesced NetMaps."""

    def __init__(self, mask: NotifyWatchOpt, uid: int | None = None) -> None:
        self.mask = mask
        self.uid = uid  # the caller's uid (SO_PEERCRED); None = in-process, never sees private keys
        self.queue: asyncio.Queue[Notify | None] = asyncio.Queue(WATCH_QUEUE_MAX + 1)
        self.overflowed = False
        self.pending_netmap: Notify | None = None  # RATE_LIMIT: latest NetMap-only notify, sent by the ticker

    def offer(self, n: Notify) -> None:
        if self.overflowed:
            return
        if (
            self.mask & NotifyWatchOpt.RATE_LIMIT
            and n.net_map is not None
            and dataclasses.replace(n, net_map=None, version="") == Notify()
        ):
            self.pending_netmap = n
            return
        if self.queue.qsize() >= WATCH_QUEUE_MAX:
            self.overflowed = True
            self.queue.put_nowait(None)  # end of stream: the client should reconnect
            return
        self.queue.put_nowait(n)


class Backend:
    """tailscaled's LocalBackend analogue (see module doc)."""

    def __init__(
        self,
        engine: NodeEngine,
        *,
        store: PrefsStore | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        version: str = IPN_VERSION,
        os_hostname: Callable[[], str] = socket.gethostname,
        generate_keys: bool = True,
    ) -> None:
        self.engine = engine
        self.store = store or MemoryStore()
        self.log = logger or logging.getLogger("meshvpn.backend")
        self.version = version
        self._os_hostname = os_hostname
        self._generate_keys = generate_keys  # False (GUI mode): a saved login waits for the GUI's keys
        self.sm = StateMachine()
        self.prefs = Prefs(logged_out=True)
        self.keys: NodeKeys | None = None
        self.auth_url = ""
        self.err_message = ""
        self._interactive = False  # a login-interactive is pending: send BrowseToURL
        self._netmap: NetMapView | None = None
        self._engine_on = False
        self._login_wanted = False  # a login was asked for: keep the control client up in NeedsLogin
        self._lock = asyncio.Lock()
        self._watchers: set[_Watcher] = set()
        self._work: asyncio.Queue[Callable[[], Any] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._session_seq = 0
        self.dropped_inputs = 0
        self._keys_owner_uid: int | None = None  # uid that handed the current GUI keys over (set-keys)
        self._pending_rotation: NodeKeyRotation | None = None  # rotated GUI key not yet acknowledged
        self._superseded_node_keys: set[str] = set()  # node public keys control replaced (GUI may still hold one)

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> State:
        return self.sm.state

    @property
    def netmap(self) -> NetMapView | None:
        """The latest netmap view while the engine runs (None otherwise)."""
        return self._netmap if self._engine_on else None

    @property
    def logged_in(self) -> bool:
        return (
            (not self.prefs.logged_out)
            and self.prefs.config is not None
            and bool(self.prefs.config.user_profile.login_name)
        )

    async def start(self) -> None:
        """Load prefs/keys from the store and enter the first real state."""
        if self._worker is not None:
            raise RuntimeError("Backend.start() called twice")
        self._worker = asyncio.get_running_loop().create_task(self._work_loop(), name="backend-worker")
        self._ticker = asyncio.get_running_loop().create_task(self._engine_ticker(), name="backend-ticker")
        st = self.store.load()
        if st.prefs is not None:
            self.prefs = st.prefs
        if st.keys is not None:
            self.keys = st.keys
        if not self.logged_in:
            self._input(Input.START_LOGGED_OUT)
        elif self.prefs.want_running:
            self._input(Input.START_RUNNING)
        else:
            self._input(Input.START_STOPPED)
        async with self._lock:
            await self._sync_engine_locked()

    async def aclose(self) -> None:
        """Stop the engine (restoring the system) and end every watcher."""
        async with self._lock:
            if self._engine_on:
                self._engine_on = False
                try:
                    await self.engine.stop()
                except Exception:  # noqa: BLE001 - shutdown must go on
                    self.log.exception("engine stop failed during shutdown")
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        self._watchers.clear()
        for t in (self._worker, self._ticker):
            if t is None:
                continue
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
        self._worker = self._ticker = None

    async def _engine_ticker(self) -> None:
        """Every ENGINE_UPDATE_INTERVAL: flush coalesced NetMaps (RATE_LIMIT watchers), push Engine stats."""
        while True:
            await asyncio.sleep(ENGINE_UPDATE_INTERVAL)
            for w in list(self._watchers):
                if w.pending_netmap is not None:
                    n, w.pending_netmap = w.pending_netmap, None
                    w.mask &= ~NotifyWatchOpt.RATE_LIMIT
                    w.offer(n)
                    w.mask |= NotifyWatchOpt.RATE_LIMIT
            if self._engine_on and any(w.mask & NotifyWatchOpt.ENGINE_UPDATES for w in self._watchers):
                snap = self.engine.status()
                if snap.netmap is not None:
                    self._netmap = snap.netmap
                self._send(Notify(engine=self._engine_status()), only=NotifyWatchOpt.ENGINE_UPDATES)

    async def _work_loop(self) -> None:
        while True:
            job = await self._work.get()
            if job is None:
                return
            try:
                async with self._lock:
                    await job()
            except Exception:  # noqa: BLE001 - a failed job must not kill the backend
                self.log.exception("backend job failed")

    # ------------------------------------------------------------------ state machine glue

    def _input(self, inp: Input) -> None:
        before = self.sm.state
        try:
            after = self.sm.process(inp)
        except InvalidTransition as e:
            self.dropped_inputs += 1
            self.log.debug("dropped: %s", e)
            return
        if after != before:
            self.log.info("state %s -> %s (%s)", before.go_name, after.go_name, inp.value)
            if after != State.NEEDS_LOGIN:
                self.auth_url = ""
            self._send(Notify(state=after))

    def _ensure_keys(self) -> NodeKeys:
        if self.keys is None:
            if not self._generate_keys and self.logged_in:
                raise BackendError("no node keys: the GUI must hand them over (POST /localapi/v0/meshvpn/keys) first")
            self.keys = NodeKeys(MachinePrivate.generate(), NodePrivate.generate(), source="generated")
            self.log.info("generated new in-memory node keys: %r", self.keys)
        return self.keys

    def _engine_wanted(self) -> bool:
        if self.sm.state in ENGINE_WANTED:
            return True
        # Logging in needs the control client running.
        return self.sm.state == State.NEEDS_LOGIN and self._login_wanted

    async def _sync_engine_locked(self, *, auth_key: str = "", restart: bool = False) -> None:
        want = self._engine_wanted()
        if self._engine_on and (not want or restart):
            self._engine_on = False
            self._netmap = None
            await self.engine.stop()
        if want and not self._engine_on:
            if self.keys is None and not self._generate_keys and self.logged_in:
                # GUI mode: the saved login belongs to the keys in the GUI's keyring; connecting under new
                # keys would make this a different node (a new login at control). set_keys() resumes.
                self.log.warning(
                    "saved login: waiting for the GUI to hand over its keys before connecting "
                    "(for use without the GUI, run the helper with --state)"
                )
                self._send(Notify(err_message="waiting for the tray app to hand over this device's keys"))
                return
            keys = self._ensure_keys()
            self._engine_on = True
            cfg = engine_config(self.prefs, auth_key=auth_key)
            self.log.info("starting engine: control=%s node=%s", cfg.control_url, keys.node.public().short())
            await self.engine.start(cfg, keys, self._on_engine_event)

    # ------------------------------------------------------------------ engine events

    def _on_engine_event(self, ev: EngineEvent) -> None:
        if isinstance(ev, AuthURL):
            self.auth_url = ev.url
            self._input(Input.AUTH_URL)
            if self._interactive:
                self._interactive = False
                self._send(Notify(browse_to_url=ev.url))
        elif isinstance(ev, LoginNeeded):
            self._input(Input.LOGIN_NEEDED)
        elif isinstance(ev, MachineAuthNeeded):
            self._input(Input.MACHINE_AUTH_NEEDED)
        elif isinstance(ev, LoggedIn):
            self._login_wanted = False
            self.auth_url = ""
            profile = UserProfile(
                id=ev.user.id,
                login_name=ev.user.login_name,
                display_name=ev.user.display_name,
                profile_pic_url=ev.user.profile_pic_url,
            )
            self.prefs = dataclasses.replace(
                self.prefs, logged_out=False, config=Persist(user_profile=profile, node_id=ev.node_id)
            )
            self._save()
            self._input(Input.LOGGED_IN)
            self._send(Notify(login_finished={}, prefs=self._public_prefs()))
            if not self.prefs.want_running:
                self._input(Input.WANT_RUNNING_OFF)
                self._work.put_nowait(self._sync_engine_locked)
        elif isinstance(ev, NetMapUpdate):
            self._netmap = ev.netmap
            self._resolve_exit_node_ip()
            self._send(Notify(net_map=netmap_json(ev.netmap)))
            self._send(Notify(engine=self._engine_status()), only=NotifyWatchOpt.ENGINE_UPDATES)
        elif isinstance(ev, EngineUp):
            self._input(Input.ENGINE_UP)
        elif isinstance(ev, EngineFailed):
            self.err_message = ev.message
            self._send(Notify(err_message=ev.message))
            self._input(Input.ENGINE_FAILED)
            self._work.put_nowait(self._sync_engine_locked)
        elif isinstance(ev, NodeKeyRotated):
            self._on_node_key_rotated(ev)

    def _on_node_key_rotated(self, ev: NodeKeyRotated) -> None:
        """The engine runs on a new node key: keep it (GUI keyring via the bus, or the state file)."""
        old = self.keys
        if old is None:
            self.log.error("engine reported a node key rotation but the backend has no keys; ignored")
            return
        new_pub = ev.new_private.public()
        old_pub = old.node.public()
        if old.node == ev.new_private:
            return
        self.keys = NodeKeys(old.machine, ev.new_private, source=old.source)
        self._superseded_node_keys.add(str(old_pub))
        self.log.info(
            "node key rotated by control: %s -> %s (%s)",
            old_pub.short(),
            new_pub.short(),
            "offering it to the GUI" if old.source == "gui" else "saving it",
        )
        rot = NodeKeyRotation(
            node_public=str(new_pub), old_node_public=str(old_pub), node_private=ev.new_private.to_text()
        )
        if old.source == "gui":
            # The owner's keyring still holds the key it handed over (the first of a chain of rotations).
            first_old = self._pending_rotation.old_node_public if self._pending_rotation else str(old_pub)
            self._pending_rotation = dataclasses.replace(rot, old_node_public=first_old)
            self._send(Notify(node_key_rotated=rot))
        else:
            self._save()  # headless (--state): the store keeps non-GUI keys
            self._send(Notify(node_key_rotated=rot.without_private()))

    def _resolve_exit_node_ip(self) -> None:
        """Like tailscaled: once the netmap knows the node, ExitNodeIP becomes ExitNodeID."""
        p, nm = self.prefs, self._netmap
        if nm is None or not p.exit_node_ip or p.exit_node_id:
            return
        peer = exit_node_of(p, nm)
        if peer is not None:
            self.prefs = dataclasses.replace(p, exit_node_id=peer.stable_id, exit_node_ip="")
            self._save()
            self._send(Notify(prefs=self._public_prefs()))

    # ------------------------------------------------------------------ IPN bus

    def _may_see_private_keys(self, w: _Watcher) -> bool:
        """Only the owner of the GUI keys, and only if it did not ask for NotifyNoPrivateKeys."""
        return (
            not w.mask & NotifyWatchOpt.NO_PRIVATE_KEYS
            and w.uid is not None
            and w.uid == self._keys_owner_uid
            and self.keys is not None
            and self.keys.source == "gui"
        )

    def _send(self, n: Notify, *, only: NotifyWatchOpt | None = None) -> None:
        n = dataclasses.replace(n, version=self.version)
        public = n.without_private_keys()
        for w in list(self._watchers):
            if only is not None and not (w.mask & only):
                continue
            w.offer(n if public is n or self._may_see_private_keys(w) else public)

    async def watch(self, mask: NotifyWatchOpt, *, uid: int | None = None) -> AsyncIterator[Notify]:
        """Notifications from now on; the first one carries what `mask` asks for (INITIAL_*).

        `uid` is the watcher's (peer credentials): the keys' owner gets a rotated node key's private
        half (see the module doc); everyone else, and in-process callers (None), public halves only.
        """
        w = _Watcher(mask, uid)
        self._session_seq += 1
        first = Notify(version=self.version, session_id=f"{id(self) & 0xFFFFFF:06x}{self._session_seq:010x}")
        if mask & NotifyWatchOpt.INITIAL_STATE:
            first = dataclasses.replace(first, state=self.state)
            if self.auth_url and self.state == State.NEEDS_LOGIN:
                first = dataclasses.replace(first, browse_to_url=self.auth_url)
            if self._pending_rotation is not None and self._may_see_private_keys(w):
                first = dataclasses.replace(first, node_key_rotated=self._pending_rotation)
        if mask & NotifyWatchOpt.INITIAL_PREFS:
            first = dataclasses.replace(first, prefs=self._public_prefs())
        if mask & NotifyWatchOpt.INITIAL_NETMAP and self._netmap is not None:
            first = dataclasses.replace(first, net_map=netmap_json(self._netmap))
        if mask & NotifyWatchOpt.INITIAL_HEALTH_STATE:
            first = dataclasses.replace(first, health={"Warnings": {}})
        self._watchers.add(w)
        try:
            if mask & (
                NotifyWatchOpt.INITIAL_STATE
                | NotifyWatchOpt.INITIAL_PREFS
                | NotifyWatchOpt.INITIAL_NETMAP
                | NotifyWatchOpt.INITIAL_HEALTH_STATE
            ):
                yield first
            while True:
                n = await w.queue.get()
                if n is None:
                    return
                yield n
        finally:
            self._watchers.discard(w)

    # ------------------------------------------------------------------ prefs

    def _public_prefs(self) -> Prefs:
        return self.prefs

    def _save(self) -> None:
        try:
            self.store.save(self.prefs, self.keys if (self.keys and self.keys.source != "gui") else None)
        except OSError as e:
            self.log.error("cannot save prefs: %s", e)

    def check_prefs(self, p: Prefs) -> None:
        """Raise PrefsError if `p` cannot be applied now (against the current netmap)."""
        check_prefs(p, self._netmap)

    def _check_user_prefs(self, new: Prefs, *, actor_is_root: bool, who: str) -> None:
        """The one gate for prefs a caller asked for: root-only fields (PrefsDenied), then validity (PrefsError)."""
        check_change(self.prefs, new, actor_is_root=actor_is_root, who=who)
        self.check_prefs(new)

    async def edit_prefs(self, mp: MaskedPrefs, *, actor_is_root: bool = False, who: str = "") -> Prefs:
        """PATCH /prefs: apply the masked edit, validate, persist, notify, reconcile the engine.

        `actor_is_root` is False unless the caller is uid 0: root-only prefs (prefs_policy) are refused.
        """
        bad = mp.set_fields & INTERNAL_PREFS
        if bad:
            raise PrefsError(f"cannot set internal prefs {sorted(bad)}")
        async with self._lock:
            new = mp.apply_to(self.prefs)
            if "ExitNodeIP" in mp.set_fields and mp.prefs.exit_node_ip and "ExitNodeID" not in mp.set_fields:
                new = dataclasses.replace(new, exit_node_id="")
            if "ExitNodeID" in mp.set_fields and mp.prefs.exit_node_id and "ExitNodeIP" not in mp.set_fields:
                new = dataclasses.replace(new, exit_node_ip="")
            self._check_user_prefs(new, actor_is_root=actor_is_root, who=who)
            old = self.prefs
            self.prefs = new
            self._resolve_exit_node_ip()
            self._save()
            self._send(Notify(prefs=self._public_prefs()))
            if old.want_running != self.prefs.want_running or "WantRunning" in mp.set_fields:
                self._input(Input.WANT_RUNNING_ON if self.prefs.want_running else Input.WANT_RUNNING_OFF)
            if self._engine_on and self._engine_wanted() and engine_config(old) != engine_config(self.prefs):
                await self.engine.reconfigure(engine_config(self.prefs))
            await self._sync_engine_locked()
            return self.prefs

    async def start_with(
        self, *, update_prefs: Prefs | None, auth_key: str = "", actor_is_root: bool = False, who: str = ""
    ) -> None:
        """POST /start: replace prefs (keeping the login), then (re)start the state machine.

        The whole UpdatePrefs replaces the prefs, so it passes the same gate as a PATCH (root-only fields).
        """
        async with self._lock:
            control_changed = False
            if update_prefs is not None:
                keep = self.prefs
                # Internal prefs are never a caller's to set (INTERNAL_PREFS): a whole-Prefs copy keeps ours.
                newp = dataclasses.replace(
                    update_prefs,
                    config=keep.config,
                    logged_out=keep.logged_out,
                    internal_exit_node_prior=keep.internal_exit_node_prior,
                )
                self._check_user_prefs(newp, actor_is_root=actor_is_root, who=who)
                control_changed = (newp.control_url or DEFAULT_CONTROL_URL) != (keep.control_url or DEFAULT_CONTROL_URL)
                if control_changed and keep.config is not None:
                    # A different control server: the old login means nothing there.
                    newp = dataclasses.replace(newp, config=None, logged_out=True)
                self.prefs = newp
                self._save()
                self._send(Notify(prefs=self._public_prefs()))
            self.err_message = ""
            if not self.logged_in:
                self._login_wanted = True
                if self.sm.state != State.NEEDS_LOGIN:
                    self._input(Input.LOGIN_NEEDED if self.sm.state != State.NO_STATE else Input.START_LOGGED_OUT)
                await self._sync_engine_locked(auth_key=auth_key, restart=bool(auth_key) or control_changed)
                return
            self._input(Input.WANT_RUNNING_ON if self.prefs.want_running else Input.WANT_RUNNING_OFF)
            await self._sync_engine_locked(auth_key=auth_key, restart=True)

    async def set_use_exit_node(self, on: bool, *, actor_is_root: bool = False, who: str = "") -> Prefs:
        """Toggle the exit node, remembering the last one (InternalExitNodePrior) to turn it back on."""
        p = self.prefs
        if on:
            prior = p.exit_node_id or p.internal_exit_node_prior
            if not prior:
                raise PrefsError("no previously used exit node to turn back on; choose one first")
            return await self.edit_prefs(
                MaskedPrefs(Prefs(exit_node_id=prior), frozenset({"ExitNodeID"})), actor_is_root=actor_is_root, who=who
            )
        if p.exit_node_id:
            self.prefs = dataclasses.replace(p, internal_exit_node_prior=p.exit_node_id)
        return await self.edit_prefs(
            MaskedPrefs(Prefs(), frozenset({"ExitNodeID", "ExitNodeIP"})), actor_is_root=actor_is_root, who=who
        )

    async def login_interactive(self) -> None:
        """POST /login-interactive: get an AuthURL from control; it is sent as BrowseToURL."""
        async with self._lock:
            self._interactive = True
            self._login_wanted = True
            self._input(Input.LOGIN_INTERACTIVE)
            if self.auth_url and self.sm.state == State.NEEDS_LOGIN:
                self._interactive = False
                self._send(Notify(browse_to_url=self.auth_url))
                return
            await self._sync_engine_locked()
            await self.engine.login_interactive()

    async def logout(self) -> None:
        """POST /logout: expire the node key at control, stop, forget the login."""
        async with self._lock:
            if self._engine_on:
                self._engine_on = False
                self._netmap = None
                await self.engine.logout()
            self._login_wanted = False
            self.prefs = dataclasses.replace(self.prefs, logged_out=True, want_running=False, config=None)
            self._save()
            self._input(Input.LOGOUT)
            self._send(Notify(prefs=self._public_prefs()))

    # ------------------------------------------------------------------ keys

    def set_keys(self, req: SetKeysRequest, *, owner_uid: int | None = None) -> KeysInfo:
        """The GUI's keys (from its keyring). Changing keys while logged in logs out the old node locally.

        `owner_uid` (the caller's uid) becomes the one watcher uid that may receive a rotated node key.
        Handing over the current keys again acknowledges a rotation; handing over a node key control
        already replaced keeps the new one (the GUI missed the rotation and gets it on its next watch).
        """
        try:
            mk = MachinePrivate.from_text(req.machine_private)
            nk = NodePrivate.from_text(req.node_private)
            if mk.is_zero() or nk.is_zero():
                raise KeyError_("zero key")
        except KeyError_ as e:
            raise PrefsError(f"invalid keys: {str(e).split(':')[0]}: want privkey:<64 hex digits>, non-zero") from None
        new = NodeKeys(mk, nk, source="gui")
        cur = self.keys
        if cur is not None and cur.source == "gui" and cur.node == nk and cur.machine == mk:
            self._keys_owner_uid = owner_uid
            if self._pending_rotation is not None:
                self._pending_rotation = None
                self.log.info("GUI stored the rotated node key %s", nk.public().short())
            return self.keys_info()
        if (
            cur is not None
            and cur.source == "gui"
            and cur.machine == mk
            and str(nk.public()) in self._superseded_node_keys
        ):
            self._keys_owner_uid = owner_uid
            self.log.info(
                "GUI handed over node key %s, which control replaced by %s; keeping the new one",
                nk.public().short(),
                cur.node.public().short(),
            )
            return self.keys_info()
        if cur is not None and cur.node == nk and cur.machine == mk:
            return self.keys_info()  # the helper's own keys (state file): it keeps them, rotations included
        if self._engine_on:
            raise BackendError("cannot replace keys while connected; bring the connection down first")
        self.keys, self._keys_owner_uid = new, owner_uid
        self._pending_rotation = None
        self._superseded_node_keys.clear()
        self.log.info("keys set by GUI: %r", new)
        if self._worker is not None and self._engine_wanted():
            self._work.put_nowait(self._sync_engine_locked)  # a saved login was waiting for these keys
        return self.keys_info()

    def keys_info(self) -> KeysInfo:
        if self.keys is None:
            return KeysInfo()
        return KeysInfo(
            machine_public=str(self.keys.machine.public()),
            node_public=str(self.keys.node.public()),
            source=self.keys.source,
        )

    # ------------------------------------------------------------------ queries

    def _engine_status(self) -> EngineStatus:
        nm = self._netmap
        peers = nm.peers if nm else ()
        return EngineStatus(
            r_bytes=sum(p.rx_bytes for p in peers),
            w_bytes=sum(p.tx_bytes for p in peers),
            num_live=sum(1 for p in peers if p.last_handshake > 0),
            live_derps=self.engine.status().live_derps if self._engine_on else 0,
            live_peers={
                p.node_key: {
                    "NodeKey": p.node_key,
                    "TxBytes": p.tx_bytes,
                    "RxBytes": p.rx_bytes,
                    "LastHandshake": _rfc3339(p.last_handshake),
                }
                for p in peers
                if p.last_handshake > 0
            }
            or None,
        )

    def status(self, *, peers: bool = True) -> Status:
        """ipnstate.Status from prefs + state + the engine's snapshot."""
        snap = self.engine.status() if self._engine_on else None
        nm: NetMapView | None = None
        if self._engine_on:
            nm = (snap.netmap if snap is not None else None) or self._netmap
        state = self.state
        health: list[str] = list(snap.health) if snap else []
        if state == State.STOPPED:
            health.insert(0, "Tailscale is stopped.")
        if self.err_message:
            health.append(self.err_message)
        derp = nm.derp_regions if nm else {}
        exit_peer = exit_node_of(self.prefs, nm)
        if nm is not None:
            self_ps = peer_status(nm.self_node, derp_regions=derp, is_self=True)
            self_ps = dataclasses.replace(
                self_ps, online=state == State.RUNNING, relay=derp.get(nm.self_node.home_derp, self_ps.relay)
            )
        else:
            pub = str(self.keys.node.public()) if (self.keys and self.logged_in) else ZERO_NODEKEY
            self_ps = PeerStatus(
                public_key=pub,
                host_name=self.prefs.hostname or self._os_hostname(),
                os="linux",
                user_id=self.prefs.config.user_profile.id if self.prefs.config else 0,
                addrs=[],
            )
        peer_map: dict[str, PeerStatus] | None = None
        exit_status = None
        if nm is not None and peers:
            peer_map = {}
            for p in nm.peers:
                ps = peer_status(p, derp_regions=derp, is_exit_node=p is exit_peer)
                peer_map[ps.public_key] = ps
        if exit_peer is not None:
            exit_status = ExitNodeStatus(
                id=exit_peer.stable_id,
                online=exit_peer.online,
                tailscale_ips=[a + ("/32" if ":" not in a else "/128") for a in exit_peer.addresses],
            )
        users: dict[str, UserProfile] | None = None
        if nm is not None:
            users = {
                str(u.id): UserProfile(
                    id=u.id, login_name=u.login_name, display_name=u.display_name, profile_pic_url=u.profile_pic_url
                )
                for u in nm.users
            }
        elif self.prefs.config is not None and self.logged_in:
            up = self.prefs.config.user_profile
            users = {str(up.id): up}
        tailnet = None
        if nm is not None:
            tailnet = TailnetStatus(
                name=nm.domain, magic_dns_suffix=nm.magic_dns_suffix, magic_dns_enabled=nm.magic_dns_enabled
            )
        return Status(
            version=self.version,
            tun=bool(snap.tun) if snap else False,
            backend_state=state.go_name,
            have_node_key=self.logged_in,
            auth_url=self.auth_url if state == State.NEEDS_LOGIN else "",
            tailscale_ips=list(nm.self_node.addresses) if nm else None,
            self=self_ps,
            exit_node_status=exit_status,
            health=health,
            magic_dns_suffix=nm.magic_dns_suffix if nm else "",
            current_tailnet=tailnet,
            peer=peer_map,
            user=users,
        )

    def _find(self, ip: str) -> tuple[PeerView | None, bool]:
        nm = self._netmap if self._engine_on else None
        if nm is None:
            return None, False
        if ip in nm.self_node.addresses:
            return nm.self_node, True
        for p in nm.peers:
            if ip in p.addresses:
                return p, False
        return None, False

    async def ping(self, ip: str, kind: str, size: int = 0) -> PingResult:
        ipaddress.ip_address(ip)  # raises ValueError
        peer, is_self = self._find(ip)
        if is_self:
            return PingResult(ip=ip, err=f"{ip} is local Tailscale IP", is_local_ip=True)
        if not self._engine_on or self.state not in (State.RUNNING, State.STARTING):
            return PingResult(ip=ip, err=f"not connected (state {self.state.go_name})")
        if peer is None:
            return PingResult(ip=ip, err="no matching peer")
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                out = await self.engine.ping(ip, kind, size)
        except asyncio.TimeoutError:
            out = None
        name = peer.name.split(".")[0] if peer.name else peer.hostname
        if out is None:
            return PingResult(ip=ip, node_ip=peer.addresses[0], node_name=name, err="timeout")
        return PingResult(
            ip=ip,
            node_ip=out.node_ip or peer.addresses[0],
            node_name=out.node_name or name,
            err=out.err,
            latency_seconds=out.latency_seconds,
            endpoint=out.endpoint,
            derp_region_id=out.derp_region_id,
            derp_region_code=out.derp_region_code,
        )

    def whois(self, addr: str) -> WhoIsResponse | None:
        nm = self._netmap if self._engine_on else None
        if nm is None:
            return None
        target: PeerView | None = None
        if addr.startswith("nodekey:"):
            for p in (nm.self_node, *nm.peers):
                if p.node_key == addr:
                    target = p
        else:
            host = addr
            if addr.startswith("["):
                host = addr[1:].split("]")[0]
            elif addr.count(":") == 1:
                host = addr.split(":")[0]
            ipaddress.ip_address(host)  # ValueError on junk
            target, _ = self._find(host)
        if target is None:
            return None
        user = next((u for u in nm.users if u.id == target.user_id), None)
        up = UserProfile(id=user.id, login_name=user.login_name, display_name=user.display_name) if user else None
        return WhoIsResponse(node=node_json(target), user_profile=up, cap_map={})

    async def netcheck(self) -> dict[str, Any]:
        return await self.engine.netcheck()

    def debug_engine(self) -> dict[str, Any]:
        """The engine's internals (GET meshvpn/debug-engine, root only); {} when the engine is not running."""
        return self.engine.debug_status() if self._engine_on else {}

    # ------------------------------------------------------------------ DNS debugging

    def _need_connection(self, what: str) -> None:
        if not self._engine_on or self.state not in (State.RUNNING, State.STARTING):
            raise BackendError(f"{what} needs a running connection (state {self.state.go_name})")

    def dns_os_config(self) -> DNSOSConfig:
        """GET dns-osconfig: the system's own DNS (as tailscaled) + what we applied (raises DNSUnavailable)."""
        self._need_connection("dns-osconfig")
        v = self.engine.dns_os_config()
        return DNSOSConfig(
            nameservers=list(v.base_nameservers),
            applied=v.applied,
            route_all=v.route_all,
            applied_nameservers=list(v.nameservers),
            applied_search_domains=list(v.search_domains),
            applied_match_domains=list(v.match_domains),
        )

    async def dns_query(self, name: str, qtype: str) -> DNSQueryResponse:
        """GET dns-query: resolve through MagicDNS (QueryError: bad name/type; asyncio.TimeoutError; DNSUnavailable)."""
        fq = to_fqdn(name)
        code = parse_query_type(qtype)
        self._need_connection("dns-query")
        async with asyncio.timeout(DNS_QUERY_TIMEOUT):
            out = await self.engine.dns_query(fq, code)
        return DNSQueryResponse.of(
            out.reply, [DNSResolver(addr=r.addr, bootstrap_resolution=list(r.bootstrap) or None) for r in out.resolvers]
        )
