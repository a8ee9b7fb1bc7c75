"""Browser SSO for real: headscale with OIDC against a lab OpenID provider, AuthURL completed in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.control.nodes import start_serve
from tests.lab.browser import complete_sso_login
from tests.lab.netlab import REPO_ROOT
from tests.lab.oidc import SsoLab
from tests.lab.peers import peer_bin
from tests.lab.tailscaled import Tailscaled

pytestmark = pytest.mark.lab

LOGIN_DEADLINE = 60.0  # generous protocol-level deadline for each wait


def _wait(pred, what: str, timeout: float = LOGIN_DEADLINE, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def test_tailscaled_browser_sso_reaches_running(sso: SsoLab):
    hostname = "sso-laptop"
    ts = Tailscaled(sso.client).start()
    up = sso.client.popen(
        [
            peer_bin("tailscale"),
            f"--socket={ts.socket}",
            "up",
            f"--login-server={sso.login_server}",
            f"--hostname={hostname}",
            "--accept-dns=false",
            f"--timeout={int(LOGIN_DEADLINE * 2)}s",
        ],
        env=ts.env,
    )

    status = _wait(lambda: (s := ts.status()).get("AuthURL") and s, "tailscaled to report an AuthURL")
    auth_url = status["AuthURL"]
    assert status["BackendState"] == "NeedsLogin"
    assert auth_url.startswith(f"{sso.login_server}/register/")
    assert sso.hs.node_by_hostname(hostname) is None  # nothing registered before the browser step

    res = sso.login_with_browser(auth_url)
    assert res.ok, res
    assert res.steps == ("idp-login", "idp-filled", "hs-confirm", "hs-done")
    assert res.idp_origin == sso.idp.issuer  # the login form was the IdP's, not headscale's
    assert "Node registered" in res.final_text, res.final_text

    assert _wait(lambda: up.poll() is not None, "`tailscale up` to return") and up.returncode == 0, sso.client.log_of(
        up
    )[-2000:]
    assert "To authenticate, visit:" in sso.client.log_of(up) and auth_url in sso.client.log_of(up)
    _wait(lambda: ts.status().get("BackendState") == "Running", "tailscaled BackendState Running")
    assert ts.ip().startswith("100.")

    user = sso.node_user(hostname)
    alice = sso.idp.user()
    assert user is not None, sso.hs.nodes()
    assert user.get("provider") == "oidc", user
    assert user.get("name") == alice.username and user.get("email") == alice.email, user
    # No manual approval happened: the only user is the one headscale created from the OIDC login.
    assert [u.get("name") for u in sso.hs.cli("users", "list")] == [alice.username]
    _assert_no_secrets_in_logs(sso)


def _assert_no_secrets_in_logs(sso: SsoLab) -> None:
    secrets = [u.password for u in sso.idp.users] + [sso.idp.client_secret]
    for log in sso.ctl.lab.dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(s in text for s in secrets), f"a secret leaked into {log.name}"


def test_wrong_password_is_refused_and_nothing_registers(sso: SsoLab):
    ts = Tailscaled(sso.client).start()
    sso.client.popen(
        [
            peer_bin("tailscale"),
            f"--socket={ts.socket}",
            "up",
            f"--login-server={sso.login_server}",
            "--hostname=sso-intruder",
            "--accept-dns=false",
            "--timeout=60s",
        ],
        env=ts.env,
    )
    auth_url = _wait(lambda: ts.status().get("AuthURL"), "tailscaled to report an AuthURL")
    res = complete_sso_login(
        auth_url, sso.idp.user().username, "not-the-password", sso.client.ns, prefix="sso-wrongpw", check=False
    )
    assert not res.ok and "idp-error" in res.steps, res
    assert ts.status().get("BackendState") == "NeedsLogin"
    assert sso.hs.node_by_hostname("sso-intruder") is None


def test_our_helper_browser_sso_reaches_running(sso: SsoLab):
    """Our stack: `mesh-helper serve` (real engine) + `meshctl up`; the AuthURL is our LocalAPI's BrowseToURL."""
    hostname = "py-sso"
    lab, client = sso.client.lab, sso.client
    sock = str(lab.dir / "helper-sso.sock")
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", "MESH_TESTING": "1"}
    helper = start_serve(client, Path(sock), lab.dir / "helper-sso-run", tun="mesh0", extra=("-v",))

    # `meshctl up --json` prints {"AuthURL": ...} for each BrowseToURL notification it gets from the IPN bus.
    up = client.popen(
        [
            sys.executable,
            "-m",
            "engine.cli.meshctl",
            "--socket",
            sock,
            "up",
            "--json",
            "--login-server",
            sso.login_server,
            "--hostname",
            hostname,
            "--timeout",
            "120",
        ],
        env=env,
        cwd=str(REPO_ROOT),
    )
    pat = re.compile(re.escape(sso.login_server) + r"/register/[A-Za-z0-9_-]+")
    auth_url = _wait(lambda: (m := pat.search(client.log_of(up))) and m.group(0), "BrowseToURL from our LocalAPI")
    assert sso.hs.node_by_hostname(hostname) is None

    res = sso.login_with_browser(auth_url, prefix="sso-ours")
    assert res.ok and "Node registered" in res.final_text, res

    assert _wait(lambda: up.poll() is not None, "`meshctl up` to return") and up.returncode == 0, (
        client.log_of(up)[-2000:] + client.log_of(helper)[-3000:]
    )

    def running():
        p = subprocess.run(
            [sys.executable, "-m", "engine.cli.meshctl", "--socket", sock, "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "PATH": "/usr/bin:/bin"},
            cwd=str(REPO_ROOT),
        )
        return p.returncode == 0 and json.loads(p.stdout).get("BackendState") == "Running"

    _wait(running, "our helper BackendState Running")
    user = sso.node_user(hostname)
    assert user is not None and user.get("provider") == "oidc" and user.get("name") == sso.idp.user().username, user
    _assert_no_secrets_in_logs(sso)
