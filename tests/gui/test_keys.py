"""Keys in the OS keyring: real gnome-keyring in a private D-Bus session; insecure backends refused; no key on disk."""

from __future__ import annotations

import base64
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from keyring.backends import fail, null

from meshgui.keys import KeyringUnavailable, KeyStore, PrivateKey, secure_backend
from tests.gui.fake_localapi import FakeLocalAPI

ROOT = pathlib.Path(__file__).resolve().parents[2]
HAVE_KEYRING_DAEMON = shutil.which("gnome-keyring-daemon") and shutil.which("dbus-run-session")


def test_private_key_never_prints_material():
    k = PrivateKey.generate()
    text = k.to_text()
    assert text.startswith("privkey:") and len(text) == 8 + 64
    assert text[8:] not in repr(k) and text[8:] not in str(k)
    assert repr(k).startswith("PrivateKey(public=[") and PrivateKey.from_text(text) == k
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey(b"short")
    with pytest.raises(ValueError, match="zero private key"):
        PrivateKey(bytes(32)).public()


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()], ids=["fail", "null"])
def test_insecure_backends_refused_with_help(backend):
    with pytest.raises(KeyringUnavailable, match="never writes keys to a file"):
        secure_backend(backend)
    with pytest.raises(KeyringUnavailable, match="sudo apt install gnome-keyring"):
        KeyStore(backend).load_or_create()


def test_plaintext_file_backend_refused(tmp_path):
    """keyrings.alt's PlaintextKeyring (keyring's silent fallback when installed) is refused, nothing is written."""
    alt = pytest.importorskip("keyrings.alt.file")
    kr = alt.PlaintextKeyring()
    kr.file_path = str(tmp_path / "keyring_pass.cfg")
    with pytest.raises(KeyringUnavailable):
        KeyStore(kr).load_or_create()
    assert not (tmp_path / "keyring_pass.cfg").exists()


def _forms(hex_key: str) -> list[bytes]:
    raw = bytes.fromhex(hex_key)
    return [hex_key.encode(), hex_key.upper().encode(), raw, base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


@pytest.mark.skipif(not HAVE_KEYRING_DAEMON, reason="gnome-keyring / dbus not installed")
def test_gui_keys_via_gnome_keyring_reach_helper_and_never_touch_disk(tmp_path):
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    sock = str(tmp_path / "helper.sock")
    env = {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHONPATH": str(ROOT),
    }
    app = f"{sys.executable} -m meshgui --socket {sock} --no-supervise --exit-after 6 --instance keytest"
    # An unlock password must be non-empty; the daemon reads it on stdin.
    script = f"echo -n testpass | gnome-keyring-daemon --unlock --components=secrets >/dev/null && {app} && {app}"
    with FakeLocalAPI(sock, backend="Running") as fake:
        out = subprocess.run(
            ["dbus-run-session", "--", "sh", "-c", script], env=env, cwd=ROOT, capture_output=True, timeout=120
        )
        keys = list(fake.received_keys)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    assert len(keys) == 2, "each GUI start hands the keys to the helper"
    assert keys[0] == keys[1], "the second start loads the same keys from the keyring"
    machine, node = keys[0]["MachineKey"], keys[0]["NodeKey"]
    assert machine.startswith("privkey:") and node.startswith("privkey:") and machine != node
    forms = _forms(machine[8:]) + _forms(node[8:])
    # No key material in anything written under HOME/runtime (settings, autostart, the keyring's own files),
    # nor in the GUI's output.
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_socket()]
    assert any(p.name.startswith("meshgui.") for p in written), written
    assert any("keyrings" in p.parts for p in written), "gnome-keyring stored the secrets"
    for p in written:
        data = p.read_bytes()
        for f in forms:
            assert f not in data, f"key material found in {p}"
    for f in forms:
        assert f not in out.stdout and f not in out.stderr
