"""The wg core stays sans-IO: no module imports asyncio, socket, time, os, select or subprocess."""

from __future__ import annotations

import ast
import pathlib

import pytest

WG = pathlib.Path(__file__).resolve().parents[3] / "engine" / "wg"
FORBIDDEN = {"asyncio", "socket", "time", "os", "select", "subprocess", "selectors"}


@pytest.mark.parametrize("path", sorted(WG.glob("*.py")), ids=lambda p: p.name)
def test_module_is_sans_io_and_documented(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        assert not FORBIDDEN.intersection(names), f"{path.name} imports {names}"
    doc = ast.get_docstring(tree)
    assert doc and doc.strip(), f"{path.name} has no module docstring"
