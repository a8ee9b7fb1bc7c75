"""The tray icon as a StatusNotifierItem: with a watcher on a private session bus (no XEmbed host) the app registers."""

from __future__ import annotations

import pytest

from tests.gui.sni_watcher import PrivateBus, Watcher, get_property, have_dbus_daemon, name_owner
from tests.gui.test_xvfb_tray import GuiProcess
from tests.gui.xsession import XSession, have_x_tools

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not (have_x_tools(tray=False) and have_dbus_daemon()), reason="Xvfb/dbus missing"),
]

ITEM_IFACE = "org.kde.StatusNotifierItem"


def test_app_registers_status_notifier_item(tmp_path):
    sock = str(tmp_path / "helper.sock")  # nothing listens: the "helper not running" state is fine here
    with PrivateBus() as bus, Watcher(bus.address, tmp_path / "watcher.jsonl") as watcher, XSession(tray=False) as x:
        x.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
        gui = GuiProcess(x, tmp_path, sock)
        try:
            regs = watcher.wait_for(
                lambda: [e for e in watcher.events() if e["event"] == "register"],
                "RegisterStatusNotifierItem",
                timeout=60,
            )
            gui.wait_log("tray icon shown")
            assert len(regs) == 1, regs
            reg = regs[0]
            service = reg["service"]
            if service.startswith("/"):  # item passed its object path: it lives on the sender's connection
                service, path = reg["sender"], service
            else:
                path = "/StatusNotifierItem"
                assert name_owner(bus.address, service) == reg["sender"], "registration came from another connection"

            sig, item_id = get_property(bus.address, service, path, ITEM_IFACE, "Id")
            assert sig == "s" and item_id, item_id
            sig, status = get_property(bus.address, service, path, ITEM_IFACE, "Status")
            assert (sig, status) in (("s", "Active"), ("s", "Passive"), ("s", "NeedsAttention")), status
            sig, title = get_property(bus.address, service, path, ITEM_IFACE, "Title")
            assert sig == "s" and "meshvpn" in title, title
            sig, tooltip = get_property(bus.address, service, path, ITEM_IFACE, "ToolTip")
            assert sig == "(sa(iiay)ss)" and "helper not running" in tooltip[2], tooltip  # the app's own state
            _, icon_name = get_property(bus.address, service, path, ITEM_IFACE, "IconName")
            _, pixmaps = get_property(bus.address, service, path, ITEM_IFACE, "IconPixmap")
            assert icon_name or any(w > 0 and h > 0 and len(data) == 4 * w * h for w, h, data in pixmaps), (
                icon_name,
                [(w, h, len(d)) for w, h, d in pixmaps],
            )

            assert "No system tray was found" not in gui.text()
            assert not x.xdotool("search", "--onlyvisible", "--name", "^meshvpn$", check=False).strip(), (
                "main window shown although the tray icon is up"
            )
            assert gui.proc.poll() is None
        finally:
            gui.close()
