"""Lab: our node (serve + LocalAPI) against a real Headscale, beside a real tailscaled, on one flat link."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.control.nodes import TCP_CLIENT, TCP_SERVER, OurNode, flat_lan, wait_until
from tests.lab.headscale import Headscale, auth_id_from_url
from tests.lab.tailscaled import Tailscaled

pytestmark = pytest.mark.lab


@pytest.fixture
def net(lab):
    ctl, host = flat_lan(lab)
    hs = Headscale(ctl).start()
    return lab, hs, host


def _synced_pair(hs: Headscale, host, key: str) -> tuple[OurNode, OurNode]:
    """py-a (192.0.2.11) and py-b (.12), each synced with the other."""
    a = OurNode(host("a", 11), hs.url, auth_key=key).start()
    b = OurNode(host("b", 12), hs.url, auth_key=key).start()
    a.wait_synced(1)
    b.wait_synced(1)
    return a, b


def _hs_node(hs: Headscale, hostname: str) -> dict:
    n = hs.node_by_hostname(hostname)
    assert n is not None, f"{hostname} not in headscale: {[x.get('name') for x in hs.nodes()]}"
    return n


def test_join_with_auth_keys_and_interop_with_tailscaled(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a = OurNode(host("a", 11), hs.url, auth_key=key).start()
    b = OurNode(host("b", 12), hs.url, auth_key=key).start()
    t = Tailscaled(host("t", 13)).start()
    t.up(hs.url, key, "go-t")
    a.wait_synced(2)
    b.wait_synced(2)

    # headscale: our nodes online with our hostnames; keys match ours
    def all_online():
        ns = hs.nodes()
        return ns if len(ns) == 3 and all(n.get("online") for n in ns) else None

    nodes = {n["name"]: n for n in wait_until(all_online, "all three nodes online in headscale")}
    assert set(nodes) == {"py-a", "py-b", "go-t"}
    for ours in (a, b):
        st = ours.status()
        hn = nodes[ours.hostname]
        assert hn["node_key"] == st["NodeKey"]
        assert sorted(hn["ip_addresses"]) == sorted(x.split("/")[0] for x in st["Self"]["Addresses"])

    # our netmap: the others with the right addresses, keys and endpoints
    for ours in (a, b):  # tailscaled publishes HomeDERP/endpoints after its first netcheck
        ours.wait(
            lambda s: all(p["HomeDERP"] == 999 and p["Endpoints"] for p in s["Peers"]),
            "peers' HomeDERP and endpoints",
            timeout=30,
        )
    for ours, others in ((a, ("py-b", "go-t")), (b, ("py-a", "go-t"))):
        for name in others:
            p = ours.peer(name)
            assert p is not None, f"{name} missing from {ours.hostname}'s netmap"
            assert p["Key"] == nodes[name]["node_key"]
            assert sorted(x.split("/")[0] for x in p["Addresses"]) == sorted(nodes[name]["ip_addresses"])
            assert p["DiscoKey"] == nodes[name]["disco_key"]
            assert p["HomeDERP"] == 999
    assert "192.0.2.12:41641" in a.peer("py-b")["Endpoints"]
    assert "192.0.2.11:41641" in b.peer("py-a")["Endpoints"]
    assert "192.0.2.13:41641" in a.peer("go-t")["Endpoints"]

    # the Go side: tailscale status --json lists our nodes with our keys and addresses
    def go_sees_us():
        peers = {p["HostName"]: p for p in t.peers()}
        return peers if {"py-a", "py-b"} <= set(peers) else None

    peers = wait_until(go_sees_us, "tailscaled to see our nodes")
    for ours in (a, b):
        gp = peers[ours.hostname]
        st = ours.status()
        assert gp["PublicKey"] == st["NodeKey"]
        assert sorted(gp["TailscaleIPs"]) == sorted(x.split("/")[0] for x in st["Self"]["Addresses"])
    # ... and our published endpoints are in its netmap
    nm = json.loads(t.cli("debug", "netmap").stdout)
    eps = {p.get("Name", "").split(".")[0]: p.get("Endpoints") for p in nm.get("Peers", [])}
    assert eps.get("py-a") == ["192.0.2.11:41641"], eps
    assert eps.get("py-b") == ["192.0.2.12:41641"], eps

    # data: ping and TCP between our two nodes over WireGuard, to the endpoints from the map
    b_ip = b.ip
    r = a.host.ping(b_ip, count=3)
    assert r.returncode == 0, r.stdout + r.stderr
    srv = b.host.popen_python(TCP_SERVER, b_ip, "7001")
    wait_until(lambda: "listening" in b.host.log_of(srv), "tcp server")
    out = a.host.exec_python(TCP_CLIENT, b_ip, "7001", timeout=30).stdout
    assert out.split() == ["100006", "echo:"]
    # it went through the TUN (WireGuard), not the LAN
    assert a.host.run(["ip", "route", "get", b_ip]).stdout.split()[2] == "mesh0"


def test_interactive_registration(net):
    lab, hs, host = net
    hs.create_user("bob")
    n = OurNode(host("a", 11), hs.url).start()
    st = n.wait(lambda s: s.get("AuthURL"), "AuthURL")
    assert st["State"] == "wait-auth-url"
    assert st["AuthURL"].startswith(f"{hs.url}/register/")
    pid = n.proc.pid
    hs.register(auth_id_from_url(st["AuthURL"]), "bob")
    st = n.wait_synced(0)
    assert n.proc.pid == pid and n.proc.poll() is None  # no restart
    assert st["AuthURL"] is None
    assert _hs_node(hs, "py-a")["user"]["name"] == "bob"


def test_map_deltas_follow_without_churn(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a, b = _synced_pair(hs, host, key)
    base = a.status()

    # a third node joins
    t = Tailscaled(host("t", 13)).start()
    t.up(hs.url, key, "go-t")
    st = a.wait(lambda s: s.get("Peers") and len(s["Peers"]) == 2, "go-t to appear", timeout=20)
    assert st["StreamsStarted"] == base["StreamsStarted"] == 1  # applied as deltas on the same stream
    assert st["PeerUpserts"] - base["PeerUpserts"] <= 2  # only go-t (once, maybe again when its endpoints land)
    assert st["PeerRemoves"] == base["PeerRemoves"]

    # a node goes offline: Online flips, no WireGuard churn
    before = a.status()
    b.stop(signal.SIGKILL)

    def b_offline(s):
        p = next((x for x in s["Peers"] if x["Name"].startswith("py-b.")), None)
        return p is not None and p["Online"] is False

    st = a.wait(b_offline, "py-b offline", timeout=30)
    assert st["PeerRemoves"] == before["PeerRemoves"]
    assert st["StreamsStarted"] == 1

    # the third node leaves (deleted by the admin)
    before = a.status()
    t.stop()
    hs.delete_node(int(_hs_node(hs, "go-t")["id"]))
    st = a.wait(lambda s: all(not x["Name"].startswith("go-t.") for x in s["Peers"]), "go-t removed", timeout=20)
    assert st["PeerRemoves"] - before["PeerRemoves"] == 1
    assert st["StreamsStarted"] == 1
    routes = a.host.run(["ip", "route", "show", "dev", "mesh0"]).stdout
    assert "100.64.0.3" not in routes or "go-t" in routes  # its route went with it
    assert all(x["Name"].split(".")[0] != "go-t" for x in a.status()["Peers"])


def test_control_restart_keeps_data_plane_and_reconnects(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a, b = _synced_pair(hs, host, key)
    b_ip = b.ip
    assert a.host.ping(b_ip, count=2).returncode == 0

    hs.stop()
    st = a.wait(lambda s: not s["InMapPoll"] and s["LastError"], "a to notice control is gone", timeout=20)
    assert st["State"] == "synced"  # still logged in, just not in the map poll
    r = a.host.ping(b_ip, count=3)
    assert r.returncode == 0, "data plane must keep flowing without control"

    hs.restart()
    st = a.wait(
        lambda s: s["InMapPoll"] and s["StreamsStarted"] >= 2 and not s["LastError"], "a to reconnect", timeout=45
    )
    assert len(st["Peers"]) == 1
    assert a.host.ping(b_ip, count=2).returncode == 0


def test_control_unreachable_at_start(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    hs.stop()
    a = OurNode(host("a", 11), hs.url, auth_key=key).start()
    st = a.wait(lambda s: s.get("LastError"), "an error status", timeout=20)
    assert not st["InMapPoll"] and st["Self"] is None
    assert "dial" in st["LastError"] or "GET /key" in st["LastError"]
    hs.restart()
    a.wait_synced(0, timeout=60)


def test_stalled_stream_watchdog_reconnects(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a = OurNode(host("a", 11), hs.url, auth_key=key, watchdog=5).start()
    a.wait_synced(0)
    pid = hs.proc.pid
    os.kill(pid, signal.SIGSTOP)  # the stream stops sending (TCP stays up)
    try:
        st = a.wait(lambda s: s["LastError"] and "watchdog" in s["LastError"], "watchdog", timeout=30)
        assert not st["InMapPoll"]
    finally:
        os.kill(pid, signal.SIGCONT)
    a.wait(lambda s: s["InMapPoll"] and s["StreamsStarted"] >= 2, "reconnect after watchdog", timeout=45)


def test_sigterm_restores_interface(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    h = host("a", 11)
    a = OurNode(h, hs.url, auth_key=key).start()
    b = OurNode(host("b", 12), hs.url, auth_key=key).start()
    a.wait_synced(1)
    assert "mesh0" in h.run(["ip", "route"]).stdout
    assert a.stop() == 0
    assert "mesh0" not in h.run(["ip", "link"]).stdout
    assert "mesh0" not in h.run(["ip", "route"]).stdout
    mode = os.stat(a.state).st_mode & 0o777
    assert mode == 0o600
    text = a.state.read_text()
    assert key not in text  # the auth key is never persisted
    assert key not in a.log()  # nor logged
    # restart with the same state: same node, no auth key needed
    a2 = OurNode(h, hs.url).start()
    st = a2.wait_synced(1)
    assert st["NodeKey"] == _hs_node(hs, "py-a")["node_key"]
    assert len(hs.nodes()) == 2
    del b


def test_node_key_expiry_needs_login_then_relogin(net):
    lab, hs, host = net
    hs.create_user("bob")
    a = OurNode(host("a", 11), hs.url).start()  # interactive node: expiry must surface "needs login"
    st = a.wait(lambda s: s.get("AuthURL"), "AuthURL")
    hs.register(auth_id_from_url(st["AuthURL"]), "bob")
    st = a.wait_synced(0)
    old_key = st["NodeKey"]
    hs.expire_node(int(_hs_node(hs, "py-a")["id"]))
    st = a.wait(lambda s: s["State"] in ("needs-login", "wait-auth-url"), "needs login after expiry", timeout=30)
    st = a.wait(lambda s: s.get("AuthURL"), "a new AuthURL", timeout=30)
    assert st["NodeKey"] != old_key  # rotated node key
    hs.register(auth_id_from_url(st["AuthURL"]), "bob")
    st = a.wait_synced(0, timeout=30)
    assert st["NodeKey"] == _hs_node(hs, "py-a")["node_key"]


def test_logout_on_exit(net):
    lab, hs, host = net
    key = hs.preauth_key("alice")
    a = OurNode(host("a", 11), hs.url, auth_key=key, extra_args=("--logout-on-exit",)).start()
    a.wait_synced(0)
    assert a.stop() == 0
    assert "logging-out" not in a.log()
    n = _hs_node(hs, "py-a")
    exp = n.get("expiry")
    assert exp and exp.get("seconds", 0) < time.time(), n


def test_ping_request_answered(net):
    lab, hs, host = net
    a = OurNode(host("a", 11), hs.url, auth_key=hs.preauth_key("alice")).start()
    a.wait_synced(0)
    page = hs.debug_ping(int(_hs_node(hs, "py-a")["id"]))
    assert "responded in" in page, page[-500:]
