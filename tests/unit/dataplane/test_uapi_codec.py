"""Unit tests of the UAPI codec (pure) and of UapiServer over a socket in a temp dir."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import threading

import pytest
from hypothesis import given, settings, strategies as st

from engine.dataplane import uapi
from engine.dataplane.uapi import (
    DeviceState,
    PeerState,
    RemovePeer,
    ReplacePeers,
    SetFwmark,
    SetListenPort,
    SetPrivateKey,
    UapiServer,
    UpsertPeer,
    format_get,
    handle_request,
    parse_set,
)
from tests.lab.rawsock import exchange

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
PSK = b"\x07" * 32
H1, H2, HPSK = K1.hex(), K2.hex(), PSK.hex()


def net(s):
    return ipaddress.ip_network(s)


@pytest.mark.parametrize(
    "body,want",
    [
        pytest.param(
            [f"private_key={H1}", "listen_port=51820", "fwmark=7", "replace_peers=true"],
            (SetPrivateKey(K1), SetListenPort(51820), SetFwmark(7), ReplacePeers()),
            id="interface",
        ),
        pytest.param([f"private_key={'0' * 64}"], (SetPrivateKey(None),), id="zero_key_clears"),
        pytest.param(["fwmark="], (SetFwmark(0),), id="empty_fwmark_clears"),
        pytest.param(
            [
                f"public_key={H1}",
                "endpoint=192.0.2.1:51820",
                "allowed_ip=10.0.0.0/24",
                "allowed_ip=fd00::1/128",
                "persistent_keepalive_interval=25",
                f"preshared_key={HPSK}",
                "protocol_version=1",
            ],
            (
                UpsertPeer(
                    K1,
                    endpoint=("192.0.2.1", 51820),
                    preshared_key=PSK,
                    persistent_keepalive=25,
                    allowed_ips=(net("10.0.0.0/24"), net("fd00::1/128")),
                ),
            ),
            id="peer_full",
        ),
        pytest.param(
            [f"public_key={H1}", "endpoint=[2001:db8::1]:1234", "replace_allowed_ips=true", "allowed_ip=10.1.2.3/8"],
            (
                UpsertPeer(
                    K1, endpoint=("2001:db8::1", 1234), replace_allowed_ips=True, allowed_ips=(net("10.0.0.0/8"),)
                ),
            ),
            id="peer_v6_endpoint_replace_ips",
        ),
        pytest.param(
            [f"public_key={H1}", "remove=true", f"public_key={H2}", "update_only=true"],
            (RemovePeer(K1), UpsertPeer(K2, update_only=True)),
            id="remove_and_update_only",
        ),
        pytest.param(
            [f"public_key={H1}", f"preshared_key={'0' * 64}", "allowed_ip=-10.0.0.1/32"],
            (UpsertPeer(K1, preshared_key=None, remove_allowed_ips=(net("10.0.0.1/32"),)),),
            id="psk_clear_and_allowed_ip_removal",
        ),
        pytest.param([], (), id="empty_set"),
    ],
)
def test_parse_set(body, want):
    assert parse_set(body) == want


@pytest.mark.parametrize(
    "body,errno,msg",
    [
        pytest.param(["private_key=abc"], 22, "private_key: expected 64 hex digits, got 3", id="short_key"),
        pytest.param(["private_key=" + "zz" * 32], 22, "private_key: not hex", id="nonhex_key"),
        pytest.param(["listen_port=65536"], 22, "listen_port: 65536 > 65535", id="port_range"),
        pytest.param(["listen_port=-1"], 22, "listen_port: not a decimal number: '-1'", id="port_negative"),
        pytest.param(["fwmark=4294967296"], 22, "fwmark: 4294967296 > 4294967295", id="fwmark_range"),
        pytest.param(
            ["replace_peers=false"], 22, "replace_peers: only 'true' is accepted, got 'false'", id="replace_false"
        ),
        pytest.param(["bogus=1"], 22, "invalid device key 'bogus'", id="unknown_device_key"),
        pytest.param(["no-equals"], 71, "malformed line 'no-equals'", id="malformed"),
        pytest.param([f"public_key={H1}", "endpoint=192.0.2.1"], 22, "endpoint: invalid '192.0.2.1'", id="ep_noport"),
        pytest.param(
            [f"public_key={H1}", "endpoint=2001:db8::1:5"],
            22,
            "endpoint: invalid '2001:db8::1:5'",
            id="ep_v6_unbracketed",
        ),
        pytest.param(
            [f"public_key={H1}", "endpoint=1.2.3.4:99999"], 22, "endpoint: invalid '1.2.3.4:99999'", id="ep_port"
        ),
        pytest.param(
            [f"public_key={H1}", "allowed_ip=10.0.0.0/33"], 22, "allowed_ip: invalid '10.0.0.0/33'", id="cidr"
        ),
        pytest.param(
            [f"public_key={H1}", "protocol_version=2"], 22, "protocol_version: unsupported '2'", id="proto_ver"
        ),
        pytest.param(
            [f"public_key={H1}", "listen_port=1"], 22, "device key 'listen_port' after a peer", id="iface_after_peer"
        ),
        pytest.param([f"public_key={H1}", "wat=1"], 22, "invalid peer key 'wat'", id="unknown_peer_key"),
        pytest.param(
            [f"public_key={H1}", "remove=yes"], 22, "remove: only 'true' is accepted, got 'yes'", id="remove_yes"
        ),
        pytest.param(
            [f"public_key={H1}", "persistent_keepalive_interval=70000"],
            22,
            "persistent_keepalive_interval: 70000 > 65535",
            id="keepalive_range",
        ),
    ],
)
def test_parse_set_errors(body, errno, msg):
    with pytest.raises(uapi.UapiError) as ei:
        parse_set(body)
    assert ei.value.errno == errno
    assert str(ei.value) == msg


def test_format_get_exact():
    state = DeviceState(
        private_key=K1,
        listen_port=51820,
        fwmark=0,
        peers=(
            PeerState(K2, None, "192.0.2.2:51820", ("10.0.0.2/32", "fd00::2/128"), 1700000000.25, 10, 20, 25),
            PeerState(K1, PSK),
        ),
    )
    assert format_get(state) == (
        f"private_key={H1}\nlisten_port=51820\n"
        f"public_key={H2}\npreshared_key={'0' * 64}\nprotocol_version=1\nendpoint=192.0.2.2:51820\n"
        "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=250000000\ntx_bytes=20\nrx_bytes=10\n"
        "persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\n"
        f"public_key={H1}\npreshared_key={HPSK}\nprotocol_version=1\n"
        "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
        "persistent_keepalive_interval=0\n"
    )


def test_handle_request_ops():
    r = handle_request("get=1\n\n", DeviceState(listen_port=5, fwmark=3))
    assert (r.op, r.actions, r.response) == ("get", (), "listen_port=5\nfwmark=3\nerrno=0\n\n")
    r = handle_request(f"set=1\nprivate_key={H1}\n", None)
    assert r.actions == (SetPrivateKey(K1),) and r.response == "errno=0\n\n"
    assert handle_request("set=1\nbogus=1", None).response == "errno=-22\n\n"
    assert handle_request("set=1\nbogus=1", None).actions == ()
    assert handle_request("del=1\n", None).response == "errno=-71\n\n"
    assert handle_request("", None).response == "errno=-71\n\n"


def test_set_is_all_or_nothing():
    r = handle_request(f"set=1\nlisten_port=1\npublic_key={H1}\nendpoint=nope\n", None)
    assert r.actions == () and r.response == "errno=-22\n\n"


_line = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            _line,
            st.sampled_from(
                [
                    f"public_key={H1}",
                    "remove=true",
                    "allowed_ip=10.0.0.0/8",
                    "endpoint=1.2.3.4:5",
                    "listen_port=1",
                    "replace_peers=true",
                    "update_only=true",
                    "fwmark=1",
                ]
            ),
        ),
        max_size=12,
    )
)
def test_set_parser_never_raises_other_errors(lines):
    r = handle_request("set=1\n" + "\n".join(lines), None)
    assert r.response.startswith("errno=") and r.response.endswith("\n\n")


# --- the adapter against a real Device (configuration only; no TUN, no socket bound) --------


def _device():
    from engine.dataplane.device import Device

    return Device("mwtest0")


def test_apply_actions_real_device():
    dev = _device()
    srv = UapiServer(dev, "x")
    body = (
        f"set=1\nprivate_key={H1}\nfwmark=9\nreplace_peers=true\npublic_key={H2}\n"
        f"endpoint=192.0.2.9:51820\nallowed_ip=10.0.0.2/32\nallowed_ip=10.0.1.0/24\n"
        f"preshared_key={HPSK}\npersistent_keepalive_interval=25"
    )
    assert srv.respond(body) == "errno=0\n\n"
    (p,) = dev.peers()
    assert bytes(p.public_key) == K2 and str(p.endpoint) == "192.0.2.9:51820"
    assert p.preshared_key == PSK and p.persistent_keepalive == 25
    assert [str(n) for n in p.allowed_ips] == ["10.0.0.2/32", "10.0.1.0/24"]
    assert dev.fwmark == 9
    # remove one allowed ip (new wg(8) syntax), update_only on an unknown peer is ignored
    assert (
        srv.respond(
            f"set=1\npublic_key={H2}\nallowed_ip=-10.0.1.0/24\npublic_key={'ab' * 32}\n"
            "update_only=true\nendpoint=1.1.1.1:1"
        )
        == "errno=0\n\n"
    )
    (p,) = dev.peers()
    assert [str(n) for n in p.allowed_ips] == ["10.0.0.2/32"]
    get = srv.respond("get=1")
    assert f"public_key={H2}\n" in get and "endpoint=192.0.2.9:51820\n" in get and get.endswith("errno=0\n\n")
    assert srv.respond(f"set=1\npublic_key={H2}\nremove=true") == "errno=0\n\n"
    assert dev.peers() == []


def test_apply_failure_maps_to_errno():
    def boom(device, actions):
        raise uapi.UapiError(98, "port in use")

    srv = UapiServer(_device(), "x", apply=boom)
    assert srv.respond("set=1\nlisten_port=1") == "errno=-98\n\n"


def _talk(path, data: bytes) -> bytes:
    return exchange(path, data, shut_wr=True)


def test_server_socket_lifecycle(tmp_path):
    dev = _device()
    # a stale socket file (nobody listening) is replaced
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "mwt0.sock"))
    stale.close()
    with UapiServer(dev, "mwt0", socket_dir=tmp_path) as srv:
        mode = stat.S_IMODE(os.stat(srv.path).st_mode)
        assert mode & 0o077 == 0, oct(mode)
        # two requests on one connection
        out = _talk(srv.path, "set=1\nlisten_port=4242\n\nget=1\n\n".encode())
        assert out == b"errno=0\n\nlisten_port=4242\nerrno=0\n\n"
        # a live socket is not stolen
        with pytest.raises(RuntimeError, match="in use"):
            UapiServer(dev, "mwt0", socket_dir=tmp_path).start()
        # concurrent clients
        res = []
        ts = [threading.Thread(target=lambda: res.append(_talk(srv.path, b"get=1\n\n"))) for _ in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert res == [b"listen_port=4242\nerrno=0\n\n"] * 8
        # an over-long line is a protocol error
        assert _talk(srv.path, b"set=1\n" + b"a" * 5000 + b"\n\n") == b"errno=-71\n\n"
    assert not srv.path.exists()
