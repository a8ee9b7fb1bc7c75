"""The bundle's runtime hook gives child processes the caller's LD_LIBRARY_PATH, not the bundle's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.packaging.conftest import ROOT

HOOK = ROOT / "installers" / "pyinstaller" / "rthook_subprocess_env.py"
SHOW = (
    "import os, runpy, subprocess; runpy.run_path({hook!r}); "
    "print(subprocess.run(['sh', '-c', 'echo \"${{LD_LIBRARY_PATH-unset}}|${{LD_LIBRARY_PATH_ORIG-unset}}\"'], "
    "capture_output=True, text=True).stdout.strip())"
)


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {"LD_LIBRARY_PATH": "/opt/meshvpn/_internal:/usr/local/lib", "LD_LIBRARY_PATH_ORIG": "/usr/local/lib"},
            "/usr/local/lib|unset",
        ),
        ({"LD_LIBRARY_PATH": "/opt/meshvpn/_internal"}, "unset|unset"),
        ({}, "unset|unset"),
    ],
)
def test_children_get_the_callers_library_path(env, expected):
    r = subprocess.run(
        [sys.executable, "-c", SHOW.format(hook=str(HOOK))],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected
