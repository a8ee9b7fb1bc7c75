"""The GUI's EngineClient run as nobody (an unprivileged uid) against a LocalAPI socket: what a non-operator gets."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.gui.helper_proc import ROOT

_CODE = """
import asyncio, json, sys
from engine.localapi.schema import MaskedPrefs
from meshgui.engine_client import EngineClient, AccessDenied
async def main():
    c = EngineClient(sys.argv[1])
    state = (await c.status()).value.backend_state
    try:
        await c.edit_prefs(MaskedPrefs.of(want_running=True))
        return {'state': state, 'denied': False}
    except AccessDenied as e:
        return {'state': state, 'denied': True, 'status': e.status}
print(json.dumps(asyncio.run(main())))
"""


def status_then_write_as_nobody(sock: str) -> dict:
    """{"state": BackendState, "denied": bool[, "status": HTTP status]} from GET status, then PATCH WantRunning."""
    # The venv interpreter lives under /root (unreadable for nobody): use the system 3.11 with the venv's
    # pure-Python packages (h11) on the path.
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    env = {"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["/usr/bin/python3", "-c", _CODE, sock],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        user=65534,
        group=65534,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
