"""A private D-Bus session bus plus a minimal org.kde.StatusNotifierWatcher (jeepney) that records item registrations.

Run as `python -m tests.gui.sni_watcher --bus ADDRESS --out FILE`: FILE gets one JSON line per event,
{"event": "ready"} once the name is owned, then {"event": "register", "sender": ..., "service": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import select
import shutil
import subprocess
import tempfile
import time

from tests.lab.netlab import stop_process

WATCHER_NAME = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
WATCHER_IFACE = "org.kde.StatusNotifierWatcher"
PROPS_IFACE = "org.freedesktop.DBus.Properties"

INTROSPECTION = """<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.kde.StatusNotifierWatcher">
    <method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
    <method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
    <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
    <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
    <property name="ProtocolVersion" type="i" access="read"/>
    <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
    <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
    <signal name="StatusNotifierHostRegistered"/>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/>
    </method>
    <method name="GetAll"><arg type="s" direction="in"/><arg type="a{sv}" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg type="s" direction="out"/></method>
  </interface>
</node>
"""

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def have_dbus_daemon() -> bool:
    return shutil.which("dbus-daemon") is not None


def _stop(proc: subprocess.Popen, *pipes) -> None:
    """Terminate `proc` if it still runs (SIGKILL after 10 s), then close the given pipes of it."""
    stop_process(proc, 10)
    for pipe in pipes:
        pipe.close()


class PrivateBus:
    """`with PrivateBus() as bus:` runs a dbus-daemon with no service activation; bus.address for clients."""

    def __init__(self) -> None:
        self.dir = ""
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def __enter__(self) -> "PrivateBus":
        self.dir = tempfile.mkdtemp(prefix="meshvpn-dbus-")  # short path: unix socket names are limited
        try:
            conf = pathlib.Path(self.dir, "bus.conf")
            conf.write_text(BUS_CONFIG.format(path=os.path.join(self.dir, "bus")))
            self.proc = subprocess.Popen(
                ["dbus-daemon", "--config-file", str(conf), "--nofork", "--print-address"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            line = self.proc.stdout.readline().decode().strip() if ready else ""
            if not line:
                raise RuntimeError(
                    f"dbus-daemon gave no address: {self.proc.stderr.read1(4000)!r}"
                    if self.proc.poll() is not None
                    else "dbus-daemon gave no address"
                )
            self.address = line
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop(self.proc, self.proc.stdout, self.proc.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def serve(address: str, out: pathlib.Path) -> None:
    """Own the watcher name and answer its methods/properties until killed."""
    from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(bus=address)
    items: list[str] = []

    def record(**event: str) -> None:
        with open(out, "a") as f:
            f.write(json.dumps(event) + "\n")

    def props() -> dict:
        return {
            "RegisteredStatusNotifierItems": ("as", list(items)),
            "IsStatusNotifierHostRegistered": ("b", True),
            "ProtocolVersion": ("i", 0),
        }

    reply = conn.send_and_get_reply(message_bus.RequestName(WATCHER_NAME, 4))  # 4 = DO_NOT_QUEUE
    if reply.body[0] != 1:  # 1 = PRIMARY_OWNER
        raise SystemExit(f"could not own {WATCHER_NAME}: {reply.body}")
    record(event="ready", unique_name=conn.unique_name)
    me = DBusAddress(WATCHER_PATH, interface=WATCHER_IFACE)
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call:
            continue
        fields = msg.header.fields
        iface, member = fields.get(HeaderFields.interface), fields.get(HeaderFields.member)
        sender = fields.get(HeaderFields.sender, "")
        if member == "Introspect":
            conn.send(new_method_return(msg, "s", (INTROSPECTION,)))
        elif member == "RegisterStatusNotifierItem" and iface in (WATCHER_IFACE, None):
            service = msg.body[0]
            record(event="register", sender=sender, service=service)
            # an item may pass its object path instead of a bus name: the item then lives at that path on `sender`
            key = service if not service.startswith("/") else sender + service
            if key not in items:
                items.append(key)
            conn.send(new_method_return(msg))
            conn.send(new_signal(me, "StatusNotifierItemRegistered", "s", (key,)))
        elif member == "RegisterStatusNotifierHost" and iface in (WATCHER_IFACE, None):
            conn.send(new_method_return(msg))
        elif iface == PROPS_IFACE and member == "Get" and msg.body[1] in props():
            conn.send(new_method_return(msg, "v", (props()[msg.body[1]],)))
        elif iface == PROPS_IFACE and member == "GetAll":
            conn.send(new_method_return(msg, "a{sv}", (props() if msg.body[0] == WATCHER_IFACE else {},)))
        elif member == "Ping":
            conn.send(new_method_return(msg))
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"no {iface}.{member}",)))


class Watcher:
    """`with Watcher(bus.address, path) as w:` runs serve() in a child; w.events() reads what it recorded."""

    def __init__(self, address: str, out: pathlib.Path) -> None:
        self.address = address
        self.out = out
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Watcher":
        import sys

        root = pathlib.Path(__file__).resolve().parents[2]
        self.out.write_text("")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gui.sni_watcher", "--bus", self.address, "--out", str(self.out)],
            cwd=root,
            env=dict(os.environ, PYTHONPATH=str(root)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            self.wait_for(lambda: any(e["event"] == "ready" for e in self.events()), "watcher owns its name")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def wait_for(self, pred, what: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop(self.proc, self.proc.stderr)


def get_property(address: str, service: str, path: str, iface: str, name: str):
    """One org.freedesktop.DBus.Properties.Get from a fresh client connection; returns (signature, value)."""
    from jeepney import DBusAddress, Properties
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg

    with open_dbus_connection(bus=address) as conn:
        reply = conn.send_and_get_reply(
            Properties(DBusAddress(path, bus_name=service, interface=iface)).get(name), timeout=10
        )
        return unwrap_msg(reply)[0]


def name_owner(address: str, name: str) -> str:
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg

    with open_dbus_connection(bus=address) as conn:
        return unwrap_msg(conn.send_and_get_reply(message_bus.GetNameOwner(name), timeout=10))[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bus", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    serve(a.bus, pathlib.Path(a.out))


if __name__ == "__main__":
    main()
