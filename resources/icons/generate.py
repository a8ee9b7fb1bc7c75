"""Writes tray icons (an SVG per state and theme), icons.qrc, and compiles meshgui/icons_rc.py with pyside6-rcc."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
RC_MODULE = HERE.parent.parent / "meshgui" / "icons_rc.py"
RC_DOC = '"""Compiled Qt resources (:/icons/...) generated from resources/icons by resources/icons/generate.py."""\n'

STATES = ("connected", "exit-node", "connecting", "stopped", "needs-login", "needs-approval", "helper-down", "error")
THEMES = {"light": "#1f2328", "dark": "#f2f4f7"}  # glyph colour for a light panel / a dark panel
GREEN, ORANGE, RED, BLUE, GREY = "#2da44e", "#d97706", "#d1242f", "#1f6feb", "#8c959f"

# Three nodes of a mesh on a 64x64 canvas, and the links between them.
NODES = ((32, 12), (12, 48), (52, 48))
LINKS = ((0, 1), (1, 2), (2, 0))


def glyph(state: str, ink: str) -> str:
    active = state in ("connected", "exit-node")
    dim = not active and state != "connecting"
    node_fill = ink if not dim else "none"
    parts = []
    for i, (a, b) in enumerate(LINKS):
        (x1, y1), (x2, y2) = NODES[a], NODES[b]
        if state == "connecting":
            dash = ' stroke-dasharray="4 4"' if i else ""
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{ink}" stroke-width="4"{dash}/>')
        elif active:
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{ink}" stroke-width="4"/>')
        else:
            parts.append(
                f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{GREY}" stroke-width="3" '
                'stroke-dasharray="2 5" stroke-linecap="round"/>'
            )
    for x, y in NODES:
        parts.append(f'<circle cx="{x}" cy="{y}" r="8" fill="{node_fill}" stroke="{ink}" stroke-width="4"/>')
    badge = {
        "connected": (GREEN, ""),
        "exit-node": (
            BLUE,
            '<path d="M44 52 l6 -6 l6 6 M50 46 v14" stroke="#fff" stroke-width="3" fill="none" '
            'stroke-linecap="round" stroke-linejoin="round"/>',
        ),
        "needs-login": (
            ORANGE,
            '<circle cx="50" cy="50" r="3.5" fill="none" stroke="#fff" stroke-width="2.5"/>'
            '<path d="M50 54 v5" stroke="#fff" stroke-width="2.5" stroke-linecap="round"/>',
        ),
        "needs-approval": (
            ORANGE,
            '<path d="M50 44 v7 l4 3" stroke="#fff" stroke-width="3" fill="none" stroke-linecap="round"/>',
        ),
        "helper-down": (
            RED,
            '<path d="M45 45 l10 10 M55 45 l-10 10" stroke="#fff" stroke-width="3" stroke-linecap="round"/>',
        ),
        "error": (
            RED,
            '<path d="M50 43 v8" stroke="#fff" stroke-width="3.5" stroke-linecap="round"/>'
            '<circle cx="50" cy="56" r="2" fill="#fff"/>',
        ),
    }.get(state)
    if badge:
        colour, mark = badge
        parts.append(f'<circle cx="50" cy="50" r="12" fill="{colour}" stroke="#fff" stroke-width="2"/>' + mark)
    body = "\n  ".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">\n'
        f"  <title>meshvpn: {state}</title>\n  {body}\n</svg>\n"
    )


def main() -> None:
    entries = []
    for theme, ink in THEMES.items():
        for state in STATES:
            name = f"tray-{state}-{theme}.svg"
            (HERE / name).write_text(glyph(state, ink))
            entries.append(f'    <file alias="tray/{theme}/{state}.svg">{name}</file>')
    (HERE / "meshvpn.svg").write_text(glyph("connected", THEMES["light"]))
    entries.append('    <file alias="app/meshvpn.svg">meshvpn.svg</file>')
    (HERE / "icons.qrc").write_text(
        '<!DOCTYPE RCC>\n<RCC version="1.0">\n  <qresource prefix="/icons">\n'
        + "\n".join(entries)
        + "\n  </qresource>\n</RCC>\n"
    )
    rcc = shutil.which("pyside6-rcc") or str(pathlib.Path(sys.executable).parent / "pyside6-rcc")
    # format 1 carries no file modification times: the output depends on the sources only (tests compare it)
    code = subprocess.run(
        [rcc, "--format-version", "1", str(HERE / "icons.qrc")], check=True, capture_output=True, text=True, cwd=HERE
    ).stdout
    RC_MODULE.write_text(RC_DOC + code)


if __name__ == "__main__":
    main()
