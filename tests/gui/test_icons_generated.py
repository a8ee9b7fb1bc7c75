"""meshgui/icons_rc.py and the tray SVGs are what resources/icons/generate.py makes from its sources (no hand edits)."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ICONS = ROOT / "resources" / "icons"


def _generator():
    spec = importlib.util.spec_from_file_location("icons_generate", ICONS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_svgs_match_the_generator():
    gen = _generator()
    for theme, ink in gen.THEMES.items():
        for state in gen.STATES:
            assert (ICONS / f"tray-{state}-{theme}.svg").read_text() == gen.glyph(state, ink), (state, theme)
    assert (ICONS / "meshvpn.svg").read_text() == gen.glyph("connected", gen.THEMES["light"])


def test_compiled_resources_match_the_qrc():
    gen = _generator()
    rcc = pathlib.Path(sys.executable).parent / "pyside6-rcc"
    code = subprocess.run(
        [str(rcc), "--format-version", "1", str(ICONS / "icons.qrc")],
        check=True,
        capture_output=True,
        text=True,
        cwd=ICONS,
    ).stdout
    assert (ROOT / "meshgui" / "icons_rc.py").read_text() == gen.RC_DOC + code, (
        "meshgui/icons_rc.py is stale: run resources/icons/generate.py"
    )
