"""Composition root of the tray app: wires client, bridge, supervisor, keys, tray, windows; `main()` runs it on qasync.

    EngineClient ─► Bridge ──stateChanged(ViewState)──► Tray / MainWindow / LoginDialog / notifications
         ▲            │ on_connected: keys to helper, restore choices after a restart
    Supervisor ◄──────┘ HELPER_DOWN → request_start()

Node key rotation: when the control server makes the node re-register under a new node key, the
helper sends it (to the keys' owner only) on the bus; the app stores it in the keyring and hands
the keys back as an acknowledgement, so the next start pushes the key control knows. Log line only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from typing import Any, Callable

from engine.localapi.schema import MaskedPrefs, NodeKeyRotation, State
from meshgui import notifications
from meshgui.bridge import BROWSER_SCHEMES, Bridge, browser_url_problem, utc_now
from meshgui.engine_client import (
    GUI_OWNER_WATCH_MASK,
    GUI_WATCH_MASK,
    ROOT_ONLY,
    EngineClient,
    HelperUnavailable,
    LocalAPIError,
    UntrustedHelper,
)
from meshgui.keys import DeviceKeys, KeyringUnavailable, KeyStore, PrivateKey, node_public_text, short_public_text
from meshgui.settings import Choices, Settings
from meshgui.state import ViewState
from meshgui.supervisor import Direct, Supervisor, default_strategies, find_socket

PING_ON_SHOW = 64  # peers pinged when the menu or window opens
PING_REFRESH = 30.0  # seconds between re-pings of already measured peers

NO_TRAY_TEXT = (
    "No system tray was found on this desktop, so meshvpn shows this window instead. "
    "On GNOME, install the “AppIndicator and KStatusNotifierItem Support” extension to get "
    "the tray icon."
)
ABOUT_TEXT = (
    "<b>meshvpn</b><br>A Tailscale-compatible mesh VPN client.<br>"
    "The tray app talks to the VPN helper over its LocalAPI socket:<br><tt>{socket}</tt>"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="meshgui", description="meshvpn tray app")
    p.add_argument(
        "--socket", help="LocalAPI socket of the helper (default: $MESHVPN_SOCKET or /run/meshvpn/meshvpn.sock)"
    )
    p.add_argument("--show", action="store_true", help="open the main window at start")
    p.add_argument("--no-supervise", action="store_true", help="never start or restart the helper")
    p.add_argument("--helper-command", help="command line that runs the helper directly (when root / for tests)")
    p.add_argument("--settings", help="settings file (default: ~/.config/meshvpn/meshgui.conf)")
    p.add_argument("--no-keyring", action="store_true", help="do not hand keyring keys to the helper")
    p.add_argument("--instance", default=f"meshgui-{os.getuid()}", help="single-instance name")
    p.add_argument("--exit-after", type=float, default=0.0, help=argparse.SUPPRESS)  # tests/benchmarks
    p.add_argument("--log-level", default=os.environ.get("MESHGUI_LOG", "WARNING"))
    return p.parse_args(argv)


class App:
    """Owns every GUI object; all network work goes through the bridge and the supervisor."""

    def __init__(
        self,
        qapp: Any,
        args: argparse.Namespace,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
        keystore: KeyStore | None = None,
        supervisor: Supervisor | None = None,
        trusted_helper_uids: frozenset[int] = ROOT_ONLY,
    ) -> None:
        """`trusted_helper_uids`: uids whose helper may receive the keyring keys (root; tests may add their own)."""
        from PySide6.QtWidgets import QSystemTrayIcon

        from meshgui.login_dialog import LoginDialog
        from meshgui.tray import Tray, app_icon
        from meshgui.window import MainWindow

        self.qapp = qapp
        self.args = args
        self.clock = clock
        self.log = logging.getLogger("meshgui")
        self.settings = Settings(args.settings)
        self.socket_path = find_socket(args.socket)
        self.client = EngineClient(self.socket_path, trusted_helper_uids=trusted_helper_uids)
        if supervisor is None and not args.no_supervise:
            strategies = (
                [Direct(args.helper_command.split(), require_root=False)]
                if args.helper_command
                else default_strategies(self.socket_path)
            )
            supervisor = Supervisor(self.socket_path, strategies, logger=self.log.getChild("supervisor"))
        self.supervisor = supervisor
        self.keystore = keystore
        self.keys: DeviceKeys | None = None
        self.keyring_error = ""
        self.trust_error = ""  # the keys were not handed over: the socket is not root's helper
        self._keys_unsupported = False
        self._keys_accepted = False  # the helper took our keys: we own them and may receive a rotated node key
        self.bridge = Bridge(
            self.client,
            clock=clock,
            logger=self.log.getChild("bridge"),
            on_connected=self._on_connected,
            watch_mask=self._watch_mask,
            on_node_key_rotated=self._on_node_key_rotated,
        )
        self.view = ViewState()
        self.notes = notifications.Deduper()
        self.notified: list[tuple[str, str]] = []  # every notification shown (tests, debugging)
        self.tray_available = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray = Tray(clock=clock, theme=self.settings.icon_theme) if self.tray_available else None
        self.window = MainWindow(clock=clock)
        self.login_dialog = LoginDialog(self.window)
        self.prefs_dialog = None
        self.qapp.setWindowIcon(app_icon())
        self.started_at = time.monotonic()
        self.tray_shown_at: float | None = None
        self._quit = asyncio.Event()
        self._pinged: set[str] = set()
        self._last_ping_refresh = -PING_REFRESH

        self.bridge.stateChanged.connect(self.on_state)
        self.bridge.browseTo.connect(self.open_url)
        self.bridge.actionFailed.connect(lambda msg: self.notify("meshvpn", msg))
        self.bridge.helperDown.connect(self._on_helper_down)
        self.window.actionRequested.connect(self.on_action)
        if self.tray is not None:
            self.tray.actionTriggered.connect(self.on_action)
            self.tray.menu.aboutToShow.connect(lambda: self._ping(self.view.peers[:PING_ON_SHOW], refresh=True))
        self.login_dialog.cancelRequested.connect(lambda: self.on_action("cancel_login", ""))
        self.login_dialog.openRequested.connect(self.open_url)
        self.login_dialog.copyRequested.connect(lambda url: self.on_action("copy", url))

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Show the UI, then run the bridge and the supervisor until quit."""
        if self.tray is not None:
            self.tray.apply(self.view)
            self.tray.show()
            self.tray_shown_at = time.monotonic()
        else:
            self.window.show_banner(NO_TRAY_TEXT)
            if not self.settings.tray_notice_shown:
                print("meshgui: " + NO_TRAY_TEXT, file=sys.stderr)
                self.settings.tray_notice_shown = True
                self.settings.sync()
        if self.tray is None or self.args.show:
            self.show_window()
        self.window.apply(self.view)
        tasks = [asyncio.ensure_future(self.bridge.run())]
        if self.supervisor is not None:
            tasks.append(asyncio.ensure_future(self.supervisor.run()))
            self.supervisor.request_start()  # no-op when the helper already answers
        if self.args.exit_after:
            asyncio.get_event_loop().call_later(self.args.exit_after, self.quit)
        try:
            await self._quit.wait()
        finally:
            self.bridge.stop()
            if self.supervisor is not None:
                await self.supervisor.aclose()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.tray is not None:
                self.tray.hide()

    def quit(self) -> None:
        self._quit.set()

    # ------------------------------------------------------------ state

    def on_state(self, view: ViewState) -> None:
        old, self.view = self.view, view
        if self.tray is not None:
            self.tray.apply(view)
        self.window.apply(view)
        if not view.read_only:  # (the window shows its own read-only banner)
            self.window.show_banner(
                self.trust_error or self.keyring_error or (NO_TRAY_TEXT if self.tray is None else "")
            )
        if view.login_pending:
            self.login_dialog.set_url(view.browse_url)
            if not self.login_dialog.isVisible():
                self.login_dialog.show()
        elif self.login_dialog.isVisible():
            self.login_dialog.hide()
        if self.window.isVisible():
            fresh = [p for p in view.peers if p.online and p.key not in self._pinged]
            if fresh:
                self._ping(fresh)
        for note in notifications.transitions(old, view):
            self.notify(*note)
        restoring = self.supervisor is not None and self.supervisor.restart_pending
        if (
            view.helper_running
            and not view.read_only
            and not restoring
            and view.backend_state not in (State.NO_STATE, State.NEEDS_LOGIN)
        ):
            choices = Choices(view.want_running, view.exit_node_id, view.allow_lan)
            if choices != self.settings.choices:
                self.settings.choices = choices

    def _on_helper_down(self, _reason: str) -> None:
        """Each failed reconnection asks the supervisor again (a dying helper may still accept for a moment)."""
        if self.supervisor is not None and self.supervisor.auto_restart:
            self.supervisor.request_start()

    async def _on_connected(self) -> None:
        """Before each (re)connection's first status: keys to the helper, then the user's choices back."""
        await self._hand_keys()
        if self.supervisor is not None and self.supervisor.restart_pending:
            c = self.settings.choices
            masked = MaskedPrefs.of(
                want_running=c.want_running, exit_node_id=c.exit_node_id, exit_node_allow_lan_access=c.allow_lan
            )
            try:
                self.log.info(
                    "restoring choices after a helper (re)start: running=%s exit=%r lan=%s",
                    c.want_running,
                    c.exit_node_id,
                    c.allow_lan,
                )
                await self.client.edit_prefs(masked)  # HelperUnavailable propagates: retried on reconnect
                self.supervisor.ack_restart()
            except LocalAPIError as e:
                self.supervisor.ack_restart()
                self.log.warning("could not restore choices after restart: %s", e)

    async def _hand_keys(self) -> None:
        if self.keystore is None or self._keys_unsupported:
            return
        if self.keys is None:
            try:
                self.keys = await asyncio.get_running_loop().run_in_executor(None, self.keystore.load_or_create)
                self.keyring_error = ""
            except KeyringUnavailable as e:
                if self.keyring_error != str(e):
                    self.keyring_error = str(e)
                    self.window.show_banner(self.keyring_error)
                    self.notify("No keyring", self.keyring_error)
                return
        self._keys_accepted = False
        try:
            info = await self.client.set_keys(self.keys.payload())
            self.trust_error = ""
            self._keys_accepted = True
            self.log.info(
                "keys handed to helper: machine %s node %s",
                self.keys.machine.public_short(),
                self.keys.node.public_short(),
            )
            if info.node_public and info.node_public != node_public_text(self.keys.node):
                self.log.info(
                    "the helper runs node key %s (rotated by the control server); it comes on the bus",
                    short_public_text(info.node_public),
                )
        except UntrustedHelper as e:
            self.log.warning("keys not handed over: %s", e)
            if self.trust_error != str(e):
                self.trust_error = str(e)
                self.window.show_banner(self.trust_error)
                self.notify("Keys not handed over", self.trust_error)
        except LocalAPIError as e:
            if e.status == 404:  # e.g. a real tailscaled, which keeps its own keys
                self._keys_unsupported = True
                self.log.info("helper has no keys endpoint; it manages its own keys")
            else:
                self.log.warning("helper refused keys: HTTP %s", e.status)

    def _watch_mask(self) -> int:
        """Without NoPrivateKeys only when the helper took our keys (it then may be a real writer: tailscaled rule)."""
        return GUI_OWNER_WATCH_MASK if self._keys_accepted else GUI_WATCH_MASK

    async def _on_node_key_rotated(self, rot: NodeKeyRotation) -> None:
        """The control server replaced the node key: keep the new one in the keyring, then acknowledge."""
        new_pub, old_pub, text = rot.node_public, rot.old_node_public, rot.node_private
        if self.keystore is None or self.keys is None or not text:
            self.log.info(
                "node key rotated by the control server: %s -> %s",
                short_public_text(old_pub),
                short_public_text(new_pub),
            )
            return
        try:
            new = PrivateKey.from_text(text)
            ok = not new.is_zero() and node_public_text(new) == new_pub
        except ValueError:
            ok = False
        if not ok:
            self.log.warning(
                "ignored a node key rotation whose key does not match its public key %s", short_public_text(new_pub)
            )
            return
        mine = node_public_text(self.keys.node)
        if mine != new_pub:
            if mine != old_pub:
                self.log.warning(
                    "ignored a node key rotation %s -> %s: the keyring holds %s",
                    short_public_text(old_pub),
                    short_public_text(new_pub),
                    self.keys.node.public_short(),
                )
                return
            try:
                self.keys = await asyncio.get_running_loop().run_in_executor(None, self.keystore.store_node_key, new)
            except (KeyringUnavailable, ValueError) as e:
                self.log.warning("could not store the rotated node key %s: %s", new.public_short(), e)
                return
            self.log.info(
                "node key rotated by the control server: keyring now holds %s (was %s)",
                new.public_short(),
                short_public_text(old_pub),
            )
        try:
            await self.client.set_keys(self.keys.payload())  # acknowledgement: the helper stops offering it
        except (LocalAPIError, HelperUnavailable, UntrustedHelper) as e:
            self.log.info("could not confirm the rotated node key to the helper (%s); it is in the keyring", e)

    # ------------------------------------------------------------ actions

    def on_action(self, action: str, arg: Any) -> None:
        b = self.bridge
        handlers: dict[str, Callable[[], Any]] = {
            "connect": b.connect_vpn,
            "disconnect": b.disconnect_vpn,
            "login": lambda: b.login(self.settings.control_url),
            "cancel_login": b.cancel_login,
            "logout": b.logout,
            "set_exit_node": lambda: b.set_exit_node(str(arg)),
            "allow_lan": lambda: b.set_allow_lan(bool(arg)),
            "set_corp_dns": lambda: b.set_corp_dns(bool(arg)),
            "set_route_all": lambda: b.set_route_all(bool(arg)),
            "set_allow_incoming": lambda: b.set_allow_incoming(bool(arg)),
            "set_advertise_exit_node": lambda: b.set_advertise_exit_node(bool(arg)),
            "copy": lambda: self.copy(str(arg)),
            "open_url": lambda: self.open_url(str(arg)),
            "open_window": self.show_window,
            "preferences": self.show_preferences,
            "about": self.show_about,
            "quit": self.quit,
            "start_helper": self._start_helper,
            "ping": lambda: b.ping_peers([p for p in self.view.peers if p.key == arg]),
        }
        fn = handlers.get(action)
        if fn is None:
            self.log.warning("unknown action %r", action)
            return
        fn()

    def _start_helper(self) -> None:
        if self.supervisor is None:
            self.notify("meshvpn", "Helper supervision is off (--no-supervise).")
            return
        self.supervisor.request_start()

    def copy(self, text: str) -> bool:
        from PySide6.QtGui import QGuiApplication

        cb = QGuiApplication.clipboard()
        cb.setText(text)
        ok = cb.text() == text
        self.notify("Copied" if ok else "Could not copy", text if ok else "The clipboard did not accept the text.")
        return ok

    def open_url(self, url: str) -> bool:
        """Open an https:// or http:// address in the browser; anything else is refused, logged and shown."""
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        problem = browser_url_problem(url)
        qurl = QUrl(url, QUrl.ParsingMode.StrictMode)
        if not problem and not (qurl.isValid() and qurl.scheme().lower() in BROWSER_SCHEMES and qurl.host()):
            problem = "the address is malformed"
        if problem:
            self.log.warning("refused to open an address: %s", problem)
            self.notify(
                "Login page not opened",
                f"meshvpn did not open the address it was given: {problem}. "
                "It opens only https:// and http:// addresses.",
            )
            return False
        if os.geteuid() == 0:
            self.log.warning("running as root: the browser would run as root too")
        if not QDesktopServices.openUrl(qurl):
            self.login_dialog.set_url(url)
            self.notify("Open the login page", f"No browser could be opened; open {url}")
            return False
        return True

    def show_window(self) -> None:
        self.window.show()
        self.window.raise_()
        self.window.activateWindow()
        self._ping(self.view.peers[:PING_ON_SHOW], refresh=True)

    def _ping(self, peers, *, refresh: bool = False) -> None:
        """Measure latency/path of `peers`; a refresh re-pings at most every PING_REFRESH seconds."""
        now = time.monotonic()
        if refresh:
            if now - self._last_ping_refresh < PING_REFRESH:
                peers = [p for p in peers if p.key not in self._pinged]
            else:
                self._last_ping_refresh = now
        peers = [p for p in peers if p.online]
        if not peers:
            return
        self._pinged.update(p.key for p in peers)
        self.bridge.ping_peers(peers)

    def show_preferences(self) -> None:
        from meshgui.prefs import PreferencesDialog

        if self.prefs_dialog is None:
            self.prefs_dialog = PreferencesDialog(self.settings, parent=self.window)
            self.prefs_dialog.saved.connect(self._prefs_saved)
        self.prefs_dialog.show()
        self.prefs_dialog.raise_()

    def _prefs_saved(self) -> None:
        if self.tray is not None:
            self.tray.set_theme(self.settings.icon_theme)
            self.tray.apply(self.view)

    def show_about(self) -> None:
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(
            QMessageBox.Icon.Information,
            "About meshvpn",
            ABOUT_TEXT.format(socket=self.socket_path),
            QMessageBox.StandardButton.Ok,
            self.window,
        )
        box.setModal(False)
        box.show()
        self._about = box

    def notify(self, title: str, body: str) -> None:
        if not self.notes.admit((title, body), time.monotonic()):
            return
        self.notified.append((title, body))
        if self.tray is not None and self.tray.icon.isVisible():
            self.tray.notify(title, body)
        else:
            asyncio.ensure_future(_notify_send(title, body))


async def _notify_send(title: str, body: str) -> None:
    """Desktop notification without a tray icon (org.freedesktop.Notifications via notify-send)."""
    import shutil

    if not shutil.which("notify-send") or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return
    try:
        proc = await asyncio.create_subprocess_exec(
            "notify-send",
            "-a",
            "meshvpn",
            title,
            body,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(5):
            await proc.wait()
    except (OSError, asyncio.TimeoutError):
        pass


# ---------------------------------------------------------------- single instance


class SingleInstance:
    """QLockFile + QLocalServer: a second start asks the first to show its window, then exits."""

    def __init__(self, name: str) -> None:
        from PySide6.QtCore import QLockFile
        from PySide6.QtNetwork import QLocalServer

        runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        self.name = name
        self.lock = QLockFile(os.path.join(runtime, f"{name}.lock"))
        self.lock.setStaleLockTime(0)
        self.server: QLocalServer | None = None
        self.on_show: Callable[[], None] = lambda: None

    def acquire(self) -> bool:
        from PySide6.QtNetwork import QLocalServer

        if not self.lock.tryLock(100):
            return False
        QLocalServer.removeServer(self.name)
        self.server = QLocalServer()
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.newConnection.connect(self._on_connection)
        self.server.listen(self.name)
        return True

    def _on_connection(self) -> None:
        assert self.server is not None
        conn = self.server.nextPendingConnection()
        if conn is not None:
            conn.readyRead.connect(lambda c=conn: self._read(c))

    def _read(self, conn) -> None:
        if bytes(conn.readAll()).strip() == b"show":
            self.on_show()
        conn.disconnectFromServer()

    def ask_first_to_show(self) -> bool:
        from PySide6.QtNetwork import QLocalSocket

        s = QLocalSocket()
        s.connectToServer(self.name)
        if not s.waitForConnected(1000):
            return False
        s.write(b"show\n")
        s.waitForBytesWritten(1000)
        s.disconnectFromServer()
        return True

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
        self.lock.unlock()


def main(argv: list[str] | None = None) -> int:
    """Console script `meshgui`."""
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    import qasync
    from PySide6.QtWidgets import QApplication

    qapp = QApplication.instance() or QApplication(sys.argv[:1])
    qapp.setApplicationName("meshvpn")
    qapp.setDesktopFileName("meshgui")
    qapp.setQuitOnLastWindowClosed(False)
    single = SingleInstance(args.instance)
    if not single.acquire():
        if single.ask_first_to_show():
            print("meshgui is already running; showing its window.", file=sys.stderr)
            return 0
        print("meshgui is already running.", file=sys.stderr)
        return 1
    keystore = None
    if not args.no_keyring:
        try:
            keystore = KeyStore()
        except Exception as e:  # keyring import/backend discovery problems are reported later as keyring errors
            logging.getLogger("meshgui").warning("keyring unavailable: %s", e)
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    app = App(qapp, args, keystore=keystore)
    single.on_show = app.show_window
    try:
        with loop:
            loop.run_until_complete(app.run())
    finally:
        single.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
