"""Import-boundary checks (STYLE.md R15): cores stay sans-IO, the GUI stays a LocalAPI client."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Pure protocol cores: no asyncio, no sockets, no threads, no Qt.
PURE_CORES = [
    "engine/wg/messages.py",
    "engine/wg/replay.py",
    "engine/wg/timers.py",
    "engine/wg/allowedips.py",
    "engine/wg/cookie.py",
    "engine/control/noise.py",
    "engine/netmap.py",
    "engine/reconfig.py",
    "engine/stun.py",
    "engine/derp/frames.py",
    "engine/filter",
    "engine/peerapi/core.py",
    "engine/peerapi/access.py",
    "engine/peerapi/ports.py",
    "engine/dns/exitdns.py",
    "engine/dns/config.py",
    "engine/ipn/dnsquery.py",
    "engine/ipn/backend.py",
    "engine/ipn/prefs_policy.py",
    "engine/localapi/connlimit.py",
    "engine/magicsock/limits.py",
    "engine/dns/names.py",
    "meshgui/state.py",
]
FORBIDDEN_IN_CORES = {"asyncio", "socket", "subprocess", "PySide6", "selectors"}  # locks are fine
GUI_ALLOWED_ENGINE = {"engine.localapi.client", "engine.localapi.schema", "engine.localapi"}


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _files(rel: str) -> list[pathlib.Path]:
    p = ROOT / rel
    if p.is_dir():
        return sorted(p.rglob("*.py"))
    return [p] if p.exists() else []


@pytest.mark.parametrize("rel", PURE_CORES)
def test_pure_cores_do_no_io(rel):
    files = _files(rel)
    assert files, f"{rel} is missing"
    for f in files:
        bad = [n for n in _imports(f) if n.split(".")[0] in FORBIDDEN_IN_CORES]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_engine_never_imports_qt():
    for f in (ROOT / "engine").rglob("*.py"):
        bad = [n for n in _imports(f) if n.split(".")[0] == "PySide6"]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_gui_imports_only_the_localapi_client():
    for f in (ROOT / "meshgui").rglob("*.py"):
        bad = [n for n in _imports(f) if n.split(".")[0] == "engine" and n not in GUI_ALLOWED_ENGINE]
        assert not bad, f"{f.relative_to(ROOT)} imports engine internals {bad}"


def test_every_module_has_a_docstring():
    missing = []
    for top in ("engine", "meshgui"):
        for f in (ROOT / top).rglob("*.py"):
            tree = ast.parse(f.read_text())
            if not ast.get_docstring(tree):
                missing.append(str(f.relative_to(ROOT)))
    assert not missing, f"modules without a one-line docstring: {missing}"


def test_no_product_module_imports_a_cli_module():
    """Layering: the CLIs (engine/cli) sit on top; nothing below them imports them."""
    for f in list((ROOT / "engine").rglob("*.py")) + list((ROOT / "meshgui").rglob("*.py")):
        if f.parent.name == "cli":
            continue
        bad = [n for n in _imports(f) if n.startswith("engine.cli")]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_tailnet_ranges_have_one_definition():
    """The tailnet prefixes and quad-100 addresses are spelled out in engine/tsaddr.py only."""
    literals = ('"100.64.0.0/10"', '"fd7a:115c:a1e0::/48"', '"100.100.100.100"', '"fd7a:115c:a1e0::53"')
    for f in (ROOT / "engine").rglob("*.py"):
        if f.name == "tsaddr.py":
            continue
        consts = [ln for ln in f.read_text().splitlines() if re.match(r"\s*[A-Z_][A-Z0-9_]*\s*=", ln)]
        bad = [lit for lit in literals if any(lit in ln for ln in consts)]
        assert not bad, f"{f.relative_to(ROOT)} defines {bad}: import them from engine.tsaddr"
