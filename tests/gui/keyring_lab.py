"""A real Secret Service (gnome-keyring, unlocked) on a private D-Bus session bus, as a pytest fixture for GUI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.gui.sni_watcher import BUS_CONFIG  # a private session bus, nothing bus-activated
from tests.lab.netlab import stop_process

HAVE_KEYRING_DAEMON = shutil.which("gnome-keyring-daemon") and shutil.which("dbus-daemon")


@pytest.fixture
def keyring_backend(tmp_path, monkeypatch):
    """A real Secret Service (gnome-keyring, unlocked) on a private session bus; this process talks to it."""
    from keyring.backends import SecretService

    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    # No service directories: nothing is bus-activated behind our back (a second, locked keyring daemon).
    conf = tmp_path / "bus.conf"
    conf.write_text(BUS_CONFIG.format(path=runtime / "bus"))
    bus = subprocess.Popen(
        ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={conf}", "--print-address=1"],
        stdout=subprocess.PIPE,
        env=env,
    )
    daemon = None
    try:
        address = bus.stdout.readline().decode().strip()
        assert address.startswith("unix:"), address
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        daemon.stdin.write(b"testpass")  # an unlock password must be non-empty
        daemon.stdin.close()
        deadline = time.monotonic() + 20
        while (
            b"true"
            not in subprocess.run(
                [
                    "dbus-send",
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ],
                env=env,
                capture_output=True,
            ).stdout
        ):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gnome-keyring-daemon did not come up")
            time.sleep(0.05)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        backend = SecretService.Keyring()
        while True:  # the login collection is created unlocked just after the name is claimed
            try:
                backend.set_password("meshvpn-probe", "probe", "x")
                backend.delete_password("meshvpn-probe", "probe")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield backend
    finally:
        if daemon is not None:
            stop_process(daemon)
        stop_process(bus)
