"""Desktop notifications for important ViewState transitions only, de-duplicated so flapping never spams."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.localapi.schema import State
from meshgui.state import TrayState, ViewState

REPEAT_AFTER = 300.0  # seconds before the very same notification may be shown again

_CONNECTED = (TrayState.CONNECTED, TrayState.EXIT_NODE)
_LOGGING_IN = (State.NEEDS_LOGIN, State.NEEDS_MACHINE_AUTH, State.STARTING)


def transitions(old: ViewState, new: ViewState) -> list[tuple[str, str]]:
    """(title, body) pairs worth telling the user about when going from `old` to `new`; pure."""
    out: list[tuple[str, str]] = []
    was, now = old.tray, new.tray
    if (
        now in _CONNECTED
        and was in (TrayState.NEEDS_LOGIN, TrayState.CONNECTING, TrayState.NEEDS_APPROVAL)
        and (old.login_pending or old.backend_state in _LOGGING_IN)
    ):
        who = f" as {new.account}" if new.account else ""
        where = f" to {new.tailnet}" if new.tailnet else ""
        out.append(("Connected", f"Connected{where}{who}"))
    if was in _CONNECTED and now is TrayState.HELPER_DOWN:
        out.append(("VPN helper stopped", "The VPN helper stopped; meshvpn is restarting it."))
    if (
        new.exit_node_id
        and new.exit_node_offline
        and not (old.exit_node_id == new.exit_node_id and old.exit_node_offline)
    ):
        if now in _CONNECTED:
            name = new.exit_node.name if new.exit_node else new.exit_node_id
            out.append(
                (
                    "Exit node offline",
                    f"Exit node {name} is offline: internet traffic is blocked until it returns "
                    "or you choose another exit node.",
                )
            )
    if new.key_expired and not old.key_expired and new.helper_running:
        out.append(("Log in again", "Your device's login expired. Log in again to stay connected."))
    elif new.key_expiring_soon and not old.key_expiring_soon:
        out.append(("Log in again soon", "Log in again to stay connected: this device's key expires soon."))
    if new.control_unreachable and not old.control_unreachable and now in _CONNECTED:
        out.append(("Coordination server unreachable", "Existing connections keep working."))
    if was is not TrayState.NEEDS_APPROVAL and now is TrayState.NEEDS_APPROVAL:
        out.append(("Approval needed", "An administrator of your network must approve this device."))
    return out


@dataclass
class Deduper:
    """Drops a notification identical to one shown less than REPEAT_AFTER seconds ago."""

    repeat_after: float = REPEAT_AFTER
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def admit(self, note: tuple[str, str], now: float) -> bool:
        t = self._last.get(note)
        if t is not None and now - t < self.repeat_after:
            return False
        self._last[note] = now
        return True
