"""Packaging tests: build the PyInstaller bundle and the .deb once per module, outside the repo."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
BUILD_DEB = ROOT / "installers" / "build-deb.sh"
PREFIX = "opt/meshvpn"
BUILD_TIMEOUT = 900  # generous: the build takes ~1 min on 2 idle cores


@dataclasses.dataclass(frozen=True)
class Built:
    deb: pathlib.Path
    tree: pathlib.Path  # `dpkg-deb -x` of the .deb
    with_gui: bool
    seconds: float

    @property
    def bundle(self) -> pathlib.Path:
        return self.tree / PREFIX


def _gui_buildable() -> bool:
    if os.environ.get("MESHVPN_NO_GUI") == "1":
        return False
    code = (
        "import importlib.util as u, sys; "
        "sys.exit(0 if u.find_spec('meshgui.app') and u.find_spec('PySide6.QtWidgets') else 1)"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def clean_env(**extra: str) -> dict[str, str]:
    """A bare environment: system PATH only, no venv, no PYTHON* variables."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory, artifacts_dir) -> Built:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    if subprocess.run([sys.executable, "-c", "import PyInstaller"]).returncode != 0:
        pytest.skip("PyInstaller is not installed (pip install pyinstaller==6.22.3)")
    base = tmp_path_factory.mktemp("pkg")
    with_gui = _gui_buildable()
    argv = ["sh", str(BUILD_DEB), "--out", str(base / "dist"), "--work", str(base / "work"), "--python", sys.executable]
    if not with_gui:
        argv.append("--no-gui")
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=base, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    seconds = time.monotonic() - t0
    (artifacts_dir / "packaging-build.log").write_text(
        f"$ {' '.join(argv)}\nexit {p.returncode} after {seconds:.0f}s\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
    )
    assert p.returncode == 0, p.stderr[-4000:]
    deb = pathlib.Path(p.stdout.strip().splitlines()[-1])
    assert deb.is_file(), p.stdout
    tree = base / "tree"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    yield Built(deb=deb, tree=tree, with_gui=with_gui, seconds=seconds)
    shutil.rmtree(base, ignore_errors=True)
