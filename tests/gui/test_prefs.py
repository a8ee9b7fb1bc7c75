"""Preferences: control server URL validation (syntax; a real headscale in a lab namespace), autostart file, dialog."""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from meshgui import autostart
from meshgui.control_check import CheckResult, check_control_url, check_syntax
from meshgui.settings import Settings


@pytest.mark.parametrize(
    "url,ok,msg",
    [
        ("", False, "Enter the address"),
        ("headscale.example.com", False, "must start with https://"),
        ("ftp://headscale.example.com", False, "must start with https://"),
        ("https://", False, "no host name"),
        ("https://hs.example.com:99999", False, "port number"),
        ("https://hs.example.com/?x=1", False, "?query"),
        ("https://hs.example.com/", True, ""),
        ("http://127.0.0.1:8080", True, ""),
    ],
)
def test_syntax(url, ok, msg):
    r = check_syntax(url)
    assert r.ok is ok and msg in r.message
    if ok:
        assert not r.url.endswith("/")


class _KeyHandler(http.server.BaseHTTPRequestHandler):
    answer: bytes = b""
    code = 200

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/key?v="):
            self.send_response(self.code)
            self.end_headers()
            self.wfile.write(self.answer)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def key_server():
    servers = []

    def make(answer: bytes, code: int = 200) -> str:
        handler = type("H", (_KeyHandler,), {"answer": answer, "code": code})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_answers_like_control_server(key_server):
    url = key_server(json.dumps({"legacyPublicKey": "mkey:" + "0" * 64, "publicKey": "mkey:" + "ab" * 32}).encode())
    r = check_control_url(url + "/", timeout=5)
    assert r.ok and r.url == url and "is a control server" in r.message


@pytest.mark.parametrize(
    "answer,code,msg",
    [
        (b"<html>hello</html>", 200, "not like a control server"),
        (b'{"publicKey": "nodekey:00"}', 200, "not like a control server"),
        (b"nope", 500, "HTTP 500"),
    ],
)
def test_not_a_control_server(key_server, answer, code, msg):
    r = check_control_url(key_server(answer, code), timeout=5)
    assert not r.ok and msg in r.message


def test_unreachable():
    r = check_control_url("http://127.0.0.1:9", timeout=5)  # discard port: nothing listens
    assert not r.ok and r.message.startswith("Could not reach 127.0.0.1:9")


@pytest.mark.lab
def test_real_headscale_accepted_and_wrong_urls_refused(lab):
    from tests.lab.headscale import Headscale

    h = lab.host("hs")
    hs = Headscale(h, "127.0.0.1", port=8080).start()
    code = (
        "import json, sys\nfrom meshgui.control_check import check_control_url\n"
        "print(json.dumps([check_control_url(u, timeout=5).__dict__ for u in sys.argv[1:]]))\n"
    )
    out = h.exec_python(code, hs.url, hs.url + "/admin", "http://127.0.0.1:8081", timeout=60)
    good, wrong_path, wrong_port = json.loads(out.stdout)
    assert good["ok"] and good["url"] == "http://127.0.0.1:8080", good
    assert not wrong_path["ok"] and "HTTP 404" in wrong_path["message"], wrong_path
    assert not wrong_port["ok"] and "Could not reach" in wrong_port["message"], wrong_port


def test_autostart_file(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert not autostart.is_enabled(env)
    path = autostart.set_enabled(True, env, ["meshgui", "--socket", "/run/x y.sock"])
    assert path == tmp_path / ".config" / "autostart" / "meshgui.desktop"
    text = path.read_text()
    assert "Exec=meshgui --socket '/run/x y.sock'" in text and "Type=Application" in text
    assert autostart.is_enabled(env)
    autostart.set_enabled(False, env)
    assert not autostart.is_enabled(env)


def test_dialog_requires_a_checked_server_before_saving(qtbot, qloop, tmp_path):
    from meshgui.prefs import PreferencesDialog

    settings = Settings(str(tmp_path / "gui.ini"))
    calls = []

    def checker(url: str) -> CheckResult:
        calls.append(url)
        return CheckResult(url.endswith("good.example"), "verdict", url)

    env = {"HOME": str(tmp_path)}
    dlg = PreferencesDialog(settings, checker=checker, env=env)
    qtbot.addWidget(dlg)
    dlg.url.setText("https://bad.example")
    dlg.save()
    assert "Press Check first" in dlg.result.text() and settings.control_url == ""
    dlg.start_check()
    qloop.run_until_complete(dlg.wait_check())
    dlg.save()
    assert settings.control_url == ""  # failed check: still not saved
    dlg.url.setText("https://good.example/")
    dlg.start_check()
    qloop.run_until_complete(dlg.wait_check())
    dlg.run_at_login.setChecked(True)
    dlg.save()
    assert calls == ["https://bad.example", "https://good.example"]
    assert settings.control_url == "https://good.example"
    assert autostart.is_enabled(env)
    assert not os.path.exists(tmp_path / "keyring_pass.cfg")
