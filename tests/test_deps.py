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
    "engine/types/netmap.py",
    "engine/control/mapsession.py",
    "engine/wgengine/reconfig.py",
    "engine/net/stun.py",
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
GUI_ALLOWED_ENGINE = {"engine.localapi.client", "engine.localapi.schema"}


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


def _imported_modules(path: pathlib.Path) -> list[str]:
    """Like _imports, but `from pkg import mod` counts as pkg.mod (so a package import cannot hide a module)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in GUI_ALLOWED_ENGINE:
                names.append(node.module)
            else:
                names.extend(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_gui_imports_only_the_localapi_client():
    for f in (ROOT / "meshgui").rglob("*.py"):
        bad = [n for n in _imported_modules(f) if n.split(".")[0] == "engine" and n not in GUI_ALLOWED_ENGINE]
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
    """The tailnet prefixes and quad-100 addresses are spelled out in engine/net/tsaddr.py only."""
    literals = ('"100.64.0.0/10"', '"fd7a:115c:a1e0::/48"', '"100.100.100.100"', '"fd7a:115c:a1e0::53"')
    for f in (ROOT / "engine").rglob("*.py"):
        if f.name == "tsaddr.py":
            continue
        consts = [ln for ln in f.read_text().splitlines() if re.match(r"\s*[A-Z_][A-Z0-9_]*\s*=", ln)]
        bad = [lit for lit in literals if any(lit in ln for ln in consts)]
        assert not bad, f"{f.relative_to(ROOT)} defines {bad}: import them from engine.net.tsaddr"


# ---- the helper's composition (engine/system.py -> engine/wgengine -> engine/ipn -> engine/service.py) ----


def _product_files() -> list[pathlib.Path]:
    return sorted(list((ROOT / "engine").rglob("*.py")) + list((ROOT / "meshgui").rglob("*.py")))


def _imported_submodules(path: pathlib.Path) -> list[str]:
    """``from a.b import c`` as ``a.b.c`` (c may be a module), for checks that _imports would miss."""
    return [
        f"{n.module}.{a.name}"
        for n in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
        for a in n.names
    ]


def test_the_old_headless_runner_is_gone():
    assert not (ROOT / "engine/daemon.py").exists() and not (ROOT / "engine/ipn/daemon_engine.py").exists()
    for f in _product_files() + sorted((ROOT / "tests").rglob("*.py")):
        names = _imports(f) + _imported_submodules(f)
        bad = [n for n in names if n in ("engine.daemon", "engine.ipn.daemon_engine")]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_wgengine_knows_nothing_of_control_or_the_backend():
    for f in _files("engine/wgengine"):
        bad = [
            n
            for n in _imports(f)
            if n.startswith(("engine.ipn", "engine.control", "engine.localapi", "engine.cli", "engine.service"))
        ]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_ipn_does_not_import_the_clis():
    for f in _files("engine/ipn"):
        bad = [n for n in _imports(f) if n.startswith(("engine.cli", "engine.service"))]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


# Entry points that parse a command line; nothing below them sees an argparse.Namespace (typed frozen config instead).
ARGPARSE_ENTRY_POINTS = {
    "engine/service.py",  # `mesh-helper serve`
    "engine/dataplane/cli.py",  # `mesh-helper wg`
    "meshgui/app.py",  # the tray app's own command line
}


def test_only_entry_points_parse_command_lines():
    for f in _product_files():
        rel = str(f.relative_to(ROOT))
        if f.parent == ROOT / "engine/cli" or rel in ARGPARSE_ENTRY_POINTS:
            continue
        text = f.read_text()
        bad = [n for n in _imports(f) if n == "argparse"] + (["Namespace"] if "Namespace" in text else [])
        assert not bad, f"{rel} reads a command line ({bad}): pass typed frozen config instead"


def test_engine_modules_stay_small():
    for f in _files("engine/wgengine") + _files("engine/ipn/tailnet_engine.py") + _files("engine/system.py"):
        n = len(f.read_text().splitlines())
        assert n <= 450, f"{f.relative_to(ROOT)} has {n} lines"


def test_exit_route_pair_has_one_definition():
    """ "0.0.0.0/0" and "::/0" as string constants appear in engine/net/tsaddr.py (EXIT_ROUTES) only."""
    allowed = {"engine/net/tsaddr.py"}
    for f in (ROOT / "engine").rglob("*.py"):
        rel = str(f.relative_to(ROOT))
        if rel in allowed:
            continue
        lits = [
            n.lineno
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.Constant) and n.value in ("0.0.0.0/0", "::/0")
        ]
        assert not lits, f"{rel}:{lits} spells out an exit route: use engine.net.tsaddr.EXIT_ROUTES"


def test_interfaces_are_enumerated_in_one_module():
    for f in (ROOT / "engine").rglob("*.py"):
        if f.relative_to(ROOT).as_posix() == "engine/net/interfaces.py":
            continue
        text = f.read_text()
        bad = [s for s in ("if_nameindex", "getifaddrs", '"-j", "addr"', "SIOCGIFADDR") if s in text]
        assert not bad, f"{f.relative_to(ROOT)} enumerates interfaces ({bad}): use engine.net.interfaces"


def test_files_are_replaced_only_through_atomicfile():
    """os.replace/os.rename only in engine/fs/atomicfile.py, plus the quarantine of refused journals (moved aside)."""
    allowed = {"engine/fs/atomicfile.py", "engine/recovery/journal.py"}
    for f in (ROOT / "engine").rglob("*.py"):
        rel = str(f.relative_to(ROOT))
        if rel in allowed:
            continue
        bad = [
            n.lineno
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.Attribute)
            and n.attr in ("replace", "rename")
            and isinstance(n.value, ast.Name)
            and n.value.id == "os"
        ]
        assert not bad, f"{rel}:{bad} renames files: write through engine.fs.atomicfile.write_atomic"


def test_magicsock_bind_does_not_import_conn():
    """MagicBind talks to its MagicConn through the BindConn protocol: no bind <-> conn import cycle."""
    assert not [n for n in _imports(ROOT / "engine/magicsock/bind.py") if n == "engine.magicsock.conn"]
    assert "engine.magicsock.conn" not in (ROOT / "engine/magicsock/bind.py").read_text()
