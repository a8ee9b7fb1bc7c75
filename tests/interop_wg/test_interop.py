"""Interop of our userspace WireGuard engine with wireguard-go and itself, driven through wg(8), in lab namespaces."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from tests.lab import xfer
from tests.lab.meshwg import WG_QUICK_SHIM, MeshWg, engine_env
from tests.lab.netlab import UAPI_DIR, poll_until
from tests.lab.peers import WgTool, WireguardGo, gen_keypair, gen_psk, peer_bin

pytestmark = pytest.mark.lab

A4, B4, A4_NEW = "192.0.2.1", "192.0.2.2", "192.0.2.4"
A6, B6 = "2001:db8::1", "2001:db8::2"
TA, TB = "10.9.0.1", "10.9.0.2"
PORT = 51820


@pytest.fixture
def hosts(lab):
    peer_bin("wireguard-go")
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, b, f"{A4}/24", f"{B4}/24", a_addr6=f"{A6}/64", b_addr6=f"{B6}/64")
    return a, b


def _start(kind, host, lab, tunnel_ip, **kw):
    cls = MeshWg if kind == "ours" else WireguardGo
    return cls(host, lab.ifname(), listen_port=PORT, address=f"{tunnel_ip}/24", **kw).start()


def _linked(lab, hosts, *, psk=None, ours_kw=None, allowed_ips=f"{TB}/32", keepalive=None):
    """Ours on a, wireguard-go on b, each the other's peer at its underlay endpoint; (ours, ref) once a pings b.

    ``ours_kw`` goes to our engine's runner; ``allowed_ips`` and ``keepalive`` to its entry for b.
    """
    a, b = hosts
    ours = _start("ours", a, lab, TA, **(ours_kw or {}))
    ref = _start("wggo", b, lab, TB)
    ours.add_peer(ref.public_key, endpoint=f"{B4}:{PORT}", allowed_ips=allowed_ips, keepalive=keepalive, psk=psk)
    ref.add_peer(ours.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32", psk=psk)
    assert a.wait_ping(TB), ours.log()[-3000:]
    return ours, ref


def _peer_row(wg, public):
    for row in wg.dump()[1:]:
        if row[0] == public:
            return row
    raise AssertionError(f"peer {public[:8]} not in wg show dump")


@pytest.mark.parametrize("initiator", ["ours", "wireguard-go"])
def test_handshake_either_side_and_ping_both_ways(lab, hosts, initiator):
    a, b = hosts
    ours = _start("ours", a, lab, TA)
    ref = _start("wggo", b, lab, TB)
    if initiator == "ours":  # only the initiator knows where the other one is
        ours.add_peer(ref.public_key, endpoint=f"{B4}:{PORT}", allowed_ips=f"{TB}/32")
        ref.add_peer(ours.public_key, allowed_ips=f"{TA}/32")
        first, first_dst, second, second_dst = a, TB, b, TA
    else:
        ours.add_peer(ref.public_key, allowed_ips=f"{TB}/32")
        ref.add_peer(ours.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32")
        first, first_dst, second, second_dst = b, TA, a, TB
    assert first.wait_ping(first_dst), ours.log()[-3000:]
    assert second.ping(second_dst, count=3).returncode == 0
    assert ours.wg.latest_handshake(ref.public_key) > 0
    assert ref.wg.latest_handshake(ours.public_key) > 0
    # the responder learned the initiator's endpoint from the handshake
    assert _peer_row(ours.wg, ref.public_key)[2] == f"{B4}:{PORT}"
    assert _peer_row(ref.wg, ours.public_key)[2] == f"{A4}:{PORT}"


def test_wg_show_reports_state(lab, hosts):
    ours, ref = _linked(lab, hosts, allowed_ips=f"{TB}/32,10.9.9.0/24", keepalive=25)
    iface, *peers = ours.wg.dump()
    assert iface[1] == ours.public_key and iface[2] == str(PORT) and iface[3] == "off"
    assert iface[0] == "(hidden)" or iface[0] == ours.keys.private
    (row,) = peers
    pub, psk, endpoint, allowed, handshake, rx, tx, keepalive = row
    assert pub == ref.public_key and psk == "(none)" and endpoint == f"{B4}:{PORT}"
    assert set(allowed.split(",")) == {f"{TB}/32", "10.9.9.0/24"}
    assert abs(int(handshake) - time.time()) < 60
    assert int(rx) > 0 and int(tx) > 0 and keepalive == "25"
    text = ours.wg.show()
    assert "latest handshake" in text and "transfer" in text and f"endpoint: {B4}:{PORT}" in text


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["ours_to_wggo", "wggo_to_ours"])
def test_tcp_100mb_sha256(lab, hosts, direction):
    a, b = hosts
    ours, _ref = _linked(lab, hosts)
    sender, receiver, dst = (a, b, TB) if direction == "ours_to_wggo" else (b, a, TA)
    recv = xfer.receiver(receiver, 5001)
    nbytes = 100 * 1024 * 1024
    sent = xfer.send(sender, dst, 5001, nbytes)
    got = xfer.received(recv)
    assert sent == [str(nbytes), sent[1]] and got == sent, ours.log()[-3000:]


def test_preshared_key(lab, hosts):
    a, b = hosts
    psk = gen_psk()
    ours, ref = _linked(lab, hosts, psk=psk)
    assert b.ping(TA).returncode == 0
    assert _peer_row(ours.wg, ref.public_key)[1] == psk
    # a wrong PSK on one side: no new session can be made
    ref.wg.remove_peer(ours.public_key)
    ref.add_peer(ours.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32", psk=gen_psk())
    assert not b.wait_ping(TA, timeout=4)


def test_rekey_with_short_timer_keeps_traffic(lab, hosts):
    a, _b = hosts
    ours, ref = _linked(lab, hosts, ours_kw={"env": {"MESH_WG_REKEY_AFTER_TIME": "3"}})
    ping = a.popen(["ping", "-c", "70", "-i", "0.2", "-W", "1", TB])
    seen = set()
    while ping.poll() is None:
        seen.add(ref.wg.latest_handshake(ours.public_key))
        time.sleep(0.5)
    out = a.log_of(ping)
    assert len(seen) >= 3, f"handshakes seen: {sorted(seen)}\n{ours.log()[-3000:]}"
    received = int(out.split(" received")[0].rsplit(" ", 1)[1])
    assert received >= 69, out  # at most one probe lost across >= 3 rekeys


@pytest.mark.parametrize("who_roams", ["wireguard-go", "ours"])
def test_roaming_behind_nat_endpoint_follows(lab, who_roams):
    """The roamer sits behind a NAT whose public address changes; the other side must follow it."""
    peer_bin("wireguard-go")
    inet = lab.switch("inet")
    fixed_host = lab.host("fixed")
    inet.attach(fixed_host, "203.0.113.1/24")
    rtr = lab.nat_router("rtr", "easy", inet, "203.0.113.2/24", "10.0.1.0/24")
    roamer_host = lab.host("roamer")
    rtr.add_host(roamer_host)
    fixed_kind, roamer_kind = ("ours", "wggo") if who_roams == "wireguard-go" else ("wggo", "ours")
    fixed = _start(fixed_kind, fixed_host, lab, TA)
    roamer = _start(roamer_kind, roamer_host, lab, TB)
    fixed.add_peer(roamer.public_key, allowed_ips=f"{TB}/32")
    roamer.add_peer(fixed.public_key, endpoint=f"203.0.113.1:{PORT}", allowed_ips=f"{TA}/32")
    assert roamer_host.wait_ping(TA)
    assert _peer_row(fixed.wg, roamer.public_key)[2].startswith("203.0.113.2:")
    rtr.change_wan_address("203.0.113.22/24")
    assert roamer_host.wait_ping(TA, timeout=10)  # the roamer speaks first, from its new public address
    assert fixed_host.ping(TB, count=3).returncode == 0
    assert _peer_row(fixed.wg, roamer.public_key)[2].startswith("203.0.113.22:")


def test_local_address_change_ours(lab, hosts):
    """Our engine's own address changes (wildcard-bound socket): the wireguard-go peer follows."""
    a, b = hosts
    ours, ref = _linked(lab, hosts)
    a.del_addr("eth0", f"{A4}/24")
    a.add_addr("eth0", f"{A4_NEW}/24")
    assert a.wait_ping(TB, timeout=10), ours.log()[-3000:]
    assert b.ping(TA, count=3).returncode == 0
    assert _peer_row(ref.wg, ours.public_key)[2] == f"{A4_NEW}:{PORT}"


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_ours_to_ours(lab, hosts, family):
    a, b = hosts
    ea, eb = (f"{A4}:{PORT}", f"{B4}:{PORT}") if family == "ipv4" else (f"[{A6}]:{PORT}", f"[{B6}]:{PORT}")
    x = _start("ours", a, lab, TA, address6="fd00:9::1/64")
    y = _start("ours", b, lab, TB, address6="fd00:9::2/64")
    x.add_peer(y.public_key, endpoint=eb, allowed_ips=f"{TB}/32,fd00:9::2/128")
    y.add_peer(x.public_key, endpoint=ea, allowed_ips=f"{TA}/32,fd00:9::1/128")
    assert a.wait_ping(TB), x.log()[-3000:]
    assert b.ping(TA, count=2).returncode == 0
    assert a.ping("fd00:9::2").returncode == 0
    assert _peer_row(x.wg, y.public_key)[2] == eb
    assert _peer_row(y.wg, x.public_key)[2] == ea


def test_wg_set_add_remove_and_setconf(lab, hosts):
    a, b = hosts
    ours = _start("ours", a, lab, TA)
    ref = _start("wggo", b, lab, TB)
    ref.add_peer(ours.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32")
    assert ours.wg.show("peers").strip() == ""
    ours.add_peer(ref.public_key, endpoint=f"{B4}:{PORT}", allowed_ips=f"{TB}/32")
    assert ours.wg.show("peers").split() == [ref.public_key]
    assert a.wait_ping(TB)
    # showconf -> setconf round trip on the running engine
    conf = a.run([ours.wg.wg, "showconf", ours.ifname]).stdout
    assert f"PublicKey = {ref.public_key}" in conf and f"ListenPort = {PORT}" in conf
    path = lab.dir / "roundtrip.conf"
    path.write_text(conf)
    a.run([ours.wg.wg, "setconf", ours.ifname, str(path)])
    assert a.run([ours.wg.wg, "showconf", ours.ifname]).stdout == conf
    ours.wg.remove_peer(ref.public_key)
    assert ours.wg.show("peers").strip() == ""
    assert a.run(["ping", "-c", "1", "-W", "1", TB], check=False).returncode != 0
    # setconf with the peer again brings it back
    a.run([ours.wg.wg, "setconf", ours.ifname, str(path)])
    assert a.wait_ping(TB)
    # interface settings on the running engine
    ours.wg.set("listen-port", str(PORT + 1), "fwmark", "0x42")
    iface = ours.wg.dump()[0]
    assert iface[2] == str(PORT + 1) and iface[3] == "0x42"
    assert "51821" in a.run(["ss", "-uln"]).stdout
    # wg(8) errors come back as errno: a bad key is refused without killing the engine
    bad = a.run([ours.wg.wg, "set", ours.ifname, "peer", "AAAA", "remove"], check=False)
    assert bad.returncode != 0
    assert ours.wg.show("peers").split() == [ref.public_key]
    raw = a.exec_python(
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
        "s.sendall(b'set=1\\nbogus=1\\n\\n')\nprint(s.recv(100).decode())",
        str(ours.socket_path),
    )
    assert raw.stdout.strip() == "errno=-22"


def test_wg_quick_up_down_with_our_engine(lab, hosts):
    peer_bin("wg-quick")
    a, b = hosts
    ref = _start("wggo", b, lab, TB)
    keys = gen_keypair()
    ifname = lab.ifname()
    conf = lab.dir / f"{ifname}.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {keys.private}\nListenPort = {PORT}\nAddress = {TA}/24\nMTU = 1400\n"
        f"[Peer]\nPublicKey = {ref.public_key}\nEndpoint = {B4}:{PORT}\nAllowedIPs = {TB}/32, 10.77.0.0/16\n"
    )
    os.chmod(conf, 0o600)
    ref.add_peer(keys.public, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32")
    env = engine_env(
        {
            "WG_QUICK_USERSPACE_IMPLEMENTATION": str(WG_QUICK_SHIM),
            "MESH_WG_LOG_FILE": str(lab.dir / f"{ifname}-engine.log"),
        }
    )
    up = a.run(["wg-quick", "up", str(conf)], env=env, timeout=60)
    assert "userspace" in up.stderr.lower() or "[#]" in up.stderr
    assert a.wait_ping(TB)
    routes = a.run(["ip", "route", "show", "dev", ifname]).stdout
    assert "10.77.0.0/16" in routes
    assert "mtu 1400" in a.run(["ip", "link", "show", "dev", ifname]).stdout
    a.run(["wg-quick", "down", str(conf)], env=env, timeout=60)
    sock = UAPI_DIR / f"{ifname}.sock"
    poll_until(lambda: not sock.exists(), 10, 0.2)
    assert a.run(["ip", "link", "show", "dev", ifname], check=False).returncode != 0
    assert not sock.exists()
    assert (
        "engine.cli.helper"
        not in a.run(["sh", "-c", f"ps -o args= -p $(ip netns pids {a.ns} | tr '\\n' ,)0"], check=False).stdout
    )


def _gone(eng, timeout=10.0) -> bool:
    return poll_until(lambda: not eng.link_exists() and not eng.socket_path.exists(), timeout) is not None


@pytest.mark.parametrize("how", ["sigterm", "sigint", "socket_deleted", "sigkill_restart"])
def test_teardown(lab, hosts, how):
    a, b = hosts
    ref = _start("wggo", b, lab, TB)
    peer_conf = f"[Peer]\nPublicKey = {ref.public_key}\nEndpoint = {B4}:{PORT}\nAllowedIPs = {TB}/32, 10.77.0.0/16\n"
    eng = _start("ours", a, lab, TA, extra_config=peer_conf)
    ref.add_peer(eng.public_key, endpoint=f"{A4}:{PORT}", allowed_ips=f"{TA}/32")
    assert a.wait_ping(TB)
    assert "10.77.0.0/16" in a.run(["ip", "route", "show", "dev", eng.ifname]).stdout
    if how == "sigterm":
        assert eng.stop(signal.SIGTERM) == 0
    elif how == "sigint":
        assert eng.stop(signal.SIGINT) == 0
    elif how == "socket_deleted":
        eng.socket_path.unlink()
        assert eng.proc.wait(timeout=10) == 0
    else:
        eng.proc.kill()
        eng.proc.wait(timeout=10)
        assert eng.socket_path.exists()  # stale: nobody cleaned it
        again = MeshWg(a, eng.ifname, eng.keys, listen_port=PORT, address=f"{TA}/24", extra_config=peer_conf).start()
        assert a.wait_ping(TB), again.log()[-3000:]
        assert again.stop(signal.SIGTERM) == 0
        eng = again
    assert _gone(eng), eng.log()[-3000:]
    assert eng.ifname not in a.run(["ip", "route", "show", "table", "all"]).stdout


def test_background_mode_and_config_errors(lab, hosts):
    """Without --foreground the command returns once ready; a bad config fails with FILE:LINE: FIELD."""
    a, b = hosts
    ifname = lab.ifname()
    keys = gen_keypair()
    conf = lab.dir / f"{ifname}.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {keys.private}\nAddress = {TA}/24\n[Peer]\nPublicKey = nope\n")
    env = engine_env({"MESH_WG_LOG_FILE": str(lab.dir / f"{ifname}-engine.log")})
    helper = ["-m", "engine.cli.helper", "wg", "--config", str(conf)]
    bad = a.run([sys.executable, *helper], env=env, check=False)
    assert bad.returncode == 1
    assert f"{ifname}.conf:5: PublicKey: not a valid base64 32-byte key" in bad.stderr
    assert keys.private not in bad.stderr + bad.stdout
    conf.write_text(f"[Interface]\nPrivateKey = {keys.private}\nListenPort = {PORT}\nAddress = {TA}/24\n")
    ok = a.run([sys.executable, *helper], env=env, timeout=60)
    assert ok.returncode == 0
    wg = WgTool(a, ifname)
    assert wg.dump()[0][1] == keys.public
    # a second engine on the same interface is refused while the first one runs
    dup = a.run([sys.executable, *helper], env=env, check=False, timeout=60)
    assert dup.returncode == 1 and "already" in dup.stderr
    (UAPI_DIR / f"{ifname}.sock").unlink()  # like wg-quick down for a userspace interface
    assert poll_until(lambda: a.run(["ip", "link", "show", "dev", ifname], check=False).returncode != 0, 10, 0.2)
