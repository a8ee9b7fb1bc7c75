"""Run-at-login through an XDG autostart entry (~/.config/autostart/meshgui.desktop)."""

from __future__ import annotations

import os
import pathlib
import shlex
import sys

FILE_NAME = "meshgui.desktop"


def autostart_dir(env: dict[str, str] | None = None) -> pathlib.Path:
    env = dict(os.environ if env is None else env)
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", os.path.expanduser("~")), ".config")
    return pathlib.Path(base) / "autostart"


def entry_text(command: list[str]) -> str:
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=meshvpn\n"
        "Comment=Mesh VPN tray\n"
        f"Exec={shlex.join(command)}\n"
        "Icon=meshvpn\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
        "X-GNOME-Autostart-Delay=3\n"  # panels start late: give the tray host a moment
    )


def default_command() -> list[str]:
    return ["meshgui"] if not getattr(sys, "frozen", False) else [sys.executable]


def is_enabled(env: dict[str, str] | None = None) -> bool:
    return (autostart_dir(env) / FILE_NAME).is_file()


def set_enabled(enabled: bool, env: dict[str, str] | None = None, command: list[str] | None = None) -> pathlib.Path:
    path = autostart_dir(env) / FILE_NAME
    if enabled:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(entry_text(command or default_command()))
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
    return path
