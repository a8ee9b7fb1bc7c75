"""No test seams in the product: no hidden fake-engine flags on `mesh-helper serve`, no Fake* in engine/, meshgui/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from engine import service
from tests.helper.conftest import REPO, helper_env

PRODUCT_DIRS = ("engine", "meshgui")
REMOVED_FLAGS = [
    ["--engine", "fake"],
    ["--engine", "real"],
    ["--engine=fake"],
    ["--fake-manual-login"],
    ["--fake-system"],
    ["--manual-login"],
]


def _product_files() -> list[Path]:
    return sorted(f for d in PRODUCT_DIRS for f in (REPO / d).rglob("*.py"))


def _is_fake(name: str, prefix: str) -> bool:
    return name.lstrip("_").lower().startswith(prefix)


def test_serve_help_names_no_engine_or_fake_flag():
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli.helper", "serve", "--help"],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "--state" in r.stdout and "--socket" in r.stdout
    assert "--engine" not in r.stdout and "fake" not in r.stdout.lower()


@pytest.mark.parametrize("flags", REMOVED_FLAGS, ids=lambda f: " ".join(f))
def test_parse_args_rejects_the_removed_test_flags(flags, capsys):
    with pytest.raises(SystemExit) as e:
        service.parse_args(["--socket", "/run/meshvpn/t.sock", *flags])
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_serve_with_a_removed_flag_exits_as_a_usage_error_touching_nothing(shared_dir):
    journal = shared_dir / "j.jsonl"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli.helper",
            "serve",
            "--engine",
            "fake",
            "--journal",
            str(journal),
            "--socket",
            str(shared_dir / "h.sock"),
        ],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unrecognized arguments: --engine fake" in r.stderr, r.stderr
    assert not journal.exists() and not (shared_dir / "h.sock").exists()


def test_the_engine_seam_is_a_typed_keyword_not_a_flag():
    """main(argv, *, engine_factory) / serve(args, engine_factory): the product passes none (real_engine)."""
    import inspect

    main = inspect.signature(service.main).parameters["engine_factory"]
    assert main.kind is inspect.Parameter.KEYWORD_ONLY and main.default is None
    assert inspect.signature(service.serve).parameters["engine_factory"].default is None
    assert not hasattr(service, "fake_system_hooks") and not hasattr(service, "build_engine")


def test_no_product_module_is_named_fake():
    bad = [str(f.relative_to(REPO)) for f in _product_files() if _is_fake(f.stem, "fake")]
    bad += [
        str(d.relative_to(REPO))
        for p in PRODUCT_DIRS
        for d in (REPO / p).rglob("*")
        if d.is_dir() and d.name != "__pycache__" and _is_fake(d.name, "fake")
    ]
    assert not bad, f"test doubles belong in tests/support/: {bad}"


def test_no_product_module_defines_a_fake_class_or_function():
    bad = []
    for f in _product_files():
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ClassDef) and _is_fake(node.name, "fake"):
                bad.append(f"{f.relative_to(REPO)}:{node.lineno} class {node.name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_fake(node.name, "fake_"):
                bad.append(f"{f.relative_to(REPO)}:{node.lineno} def {node.name}")
    assert not bad, f"test doubles belong in tests/support/: {bad}"


def test_no_product_module_imports_the_tests():
    bad = []
    for f in _product_files():
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            )
            bad += [f"{f.relative_to(REPO)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not bad, bad


def test_the_fake_helper_refuses_outside_tests_and_without_serve():
    env = {k: v for k, v in helper_env().items() if k != "MESH_TESTING"}
    r = subprocess.run(
        [sys.executable, "-m", "tests.support.fake_helper", "serve", "--socket", "/nonexistent/s"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "MESH_TESTING=1" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "tests.support.fake_helper", "wg"],
        env=helper_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "usage: python -m tests.support.fake_helper serve" in r.stderr
