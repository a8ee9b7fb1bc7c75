"""The real `tailscale` CLI (1.90.9) driving our helper (fake engine feeding a netmap) over --socket."""

from __future__ import annotations

import json

import pytest

from tests.helper.conftest import TAILSCALE, tailscale_cli

pytestmark = pytest.mark.skipif(
    not TAILSCALE.exists(), reason="tailscale CLI not built (installers/dev/build-peers.sh)"
)


def ts(helper, *args, **kw):
    return tailscale_cli(helper.socket, *args, **kw)


def status(helper) -> dict:
    p = ts(helper, "status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def prefs(helper) -> dict:
    p = ts(helper, "debug", "prefs")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_status_before_login(helper):
    p = ts(helper, "status")
    assert p.returncode == 1 and "Logged out." in p.stdout
    st = status(helper)
    assert st["BackendState"] == "NeedsLogin" and st["Peer"] is None


def test_up_status_down_up_exit_node_ping_logout(helper):
    p = ts(helper, "up", "--login-server=http://control.invalid", "--timeout=20s")
    assert p.returncode == 0, p.stderr

    st = status(helper)
    assert st["BackendState"] == "Running"
    assert st["Version"].startswith("1.90.9")
    assert st["TailscaleIPs"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    peers = {v["HostName"]: (k, v) for k, v in st["Peer"].items()}
    assert set(peers) == {"peer1", "exit1", "offline1"}
    for key, ps in peers.values():
        assert key == ps["PublicKey"] and key.startswith("nodekey:")
    assert peers["peer1"][1]["CurAddr"] == "192.0.2.2:41641" and peers["peer1"][1]["Online"]
    assert peers["exit1"][1]["ExitNodeOption"] and peers["exit1"][1]["Relay"] == "fra"
    assert peers["exit1"][1]["KeyExpiry"] == "2027-05-01T10:00:00Z"
    assert st["User"]["1001"]["LoginName"] == "alice@example.com"

    table = ts(helper, "status")
    assert table.returncode == 0, table.stderr
    assert "peer1" in table.stdout and "direct 192.0.2.2:41641" in table.stdout
    assert "offers exit node" in table.stdout
    assert "Funnel" not in table.stdout + table.stderr  # serve-config stub answers

    assert prefs(helper)["WantRunning"] is True
    p = ts(helper, "down")
    assert p.returncode == 0, p.stderr
    assert prefs(helper)["WantRunning"] is False
    assert status(helper)["BackendState"] == "Stopped"
    p = ts(helper, "status")
    assert p.returncode == 1 and "stopped" in p.stdout
    p = ts(helper, "up", "--timeout=20s")  # a flag means "restate all non-default settings"
    assert p.returncode != 0 and "--login-server=http://control.invalid" in p.stderr
    p = ts(helper, "up", timeout=30)  # bare up: simpleUp path (EditPrefs WantRunning, wait for Running)
    assert p.returncode == 0, p.stderr
    assert prefs(helper)["WantRunning"] is True and status(helper)["BackendState"] == "Running"

    # exit node: refused for a peer that does not offer it, accepted for one that does
    p = ts(helper, "set", "--exit-node=100.64.0.2")
    assert p.returncode != 0 and "not advertising an exit node" in p.stderr
    p = ts(helper, "set", "--exit-node=exit1")
    assert p.returncode == 0, p.stderr
    assert prefs(helper)["ExitNodeID"] == "n3CNTRL"
    st = status(helper)
    assert [v["HostName"] for v in st["Peer"].values() if v["ExitNode"]] == ["exit1"]
    assert st["ExitNodeStatus"]["ID"] == "n3CNTRL"
    p = ts(helper, "set", "--exit-node=")
    assert p.returncode == 0, p.stderr
    assert prefs(helper)["ExitNodeID"] == ""

    p = ts(helper, "ping", "-c", "1", "peer1")
    assert p.returncode == 0, p.stderr
    assert "pong from peer1 (100.64.0.2) via 192.0.2.2:41641" in p.stdout
    p = ts(helper, "ping", "-c", "1", "--until-direct=false", "exit1")
    assert "via DERP(fra)" in p.stdout, p.stdout + p.stderr

    p = ts(helper, "whois", "100.64.0.3")
    assert p.returncode == 0 and "exit1.tail.example.com" in p.stdout
    p = ts(helper, "exit-node", "list")
    assert p.returncode == 0 and "exit1" in p.stdout

    p = ts(helper, "logout")
    assert p.returncode == 0, p.stderr
    assert status(helper)["BackendState"] == "NeedsLogin"
    assert prefs(helper)["LoggedOut"] is True


@pytest.mark.helper_args("--manual-login")
def test_up_prints_the_auth_url_and_waits(helper):
    p = ts(helper, "up", "--login-server=http://control.invalid", "--timeout=3s")
    assert p.returncode != 0
    assert "To authenticate, visit:" in p.stderr
    assert "https://fake-control.invalid/a/0001" in p.stderr
    assert "timeout waiting for Tailscale service to enter a Running state" in p.stderr
    st = status(helper)
    assert st["BackendState"] == "NeedsLogin" and st["AuthURL"] == "https://fake-control.invalid/a/0001"


def test_watch_ipn_bus_via_cli(helper):
    p = ts(helper, "debug", "watch-ipn", "--count=1", "--initial")
    assert p.returncode == 0, p.stderr
    n = json.loads(p.stdout)
    assert n["State"] == 2 and n["Prefs"]["CorpDNS"] is True
