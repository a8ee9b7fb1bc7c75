"""tailcfg JSON: Go names out, unknown fields ignored in, nil vs empty semantics, typed errors."""

import json

import pytest

from engine.tailcfg import (
    CURRENT_CAPABILITY_VERSION,
    Hostinfo,
    MapRequest,
    MapResponse,
    NetInfo,
    RegisterAuth,
    RegisterRequest,
    RegisterResponse,
    WireError,
    decode,
    encode,
)
from engine.types.keys import DiscoPublic, NodePublic


def test_capver():
    assert CURRENT_CAPABILITY_VERSION == 130


def test_map_request_go_names():
    req = MapRequest(
        version=130,
        compress="zstd",
        node_key=NodePublic.zero(),
        disco_key=DiscoPublic.zero(),
        endpoints=("192.0.2.1:41641",),
        endpoint_types=(1,),
        stream=True,
        hostinfo=Hostinfo(
            hostname="h", os="linux", ipn_version="0.1", backend_log_id="l", net_info=NetInfo(preferred_derp=999)
        ),
    )
    d = encode(req)
    assert d == {
        "Version": 130,
        "Compress": "zstd",
        "KeepAlive": True,
        "NodeKey": "nodekey:" + "0" * 64,
        "DiscoKey": "discokey:" + "0" * 64,
        "Endpoints": ["192.0.2.1:41641"],
        "EndpointTypes": [1],
        "Hostinfo": {
            "IPNVersion": "0.1",
            "BackendLogID": "l",
            "OS": "linux",
            "Hostname": "h",
            "NetInfo": {"PreferredDERP": 999},
        },
        "Stream": True,
        "OmitPeers": False,
    }
    json.dumps(d)


def test_register_request_never_shows_auth_key():
    r = RegisterRequest(version=130, auth=RegisterAuth(auth_key="hskey-auth-SECRET"))
    assert "SECRET" not in repr(r)
    assert encode(r)["Auth"] == {"AuthKey": "hskey-auth-SECRET"}
    assert encode(r)["OldNodeKey"] == "nodekey:" + "0" * 64


def test_register_response():
    rr = decode(
        RegisterResponse,
        {
            "User": {"ID": 1, "DisplayName": "a"},
            "Login": {"LoginName": "alice"},
            "MachineAuthorized": True,
            "AuthURL": "",
            "Unknown": 5,
        },
    )
    assert rr.machine_authorized and rr.login.login_name == "alice"


def test_nil_versus_empty_packet_filter():
    assert decode(MapResponse, {}).packet_filter is None
    assert decode(MapResponse, {"PacketFilter": None}).packet_filter is None
    assert decode(MapResponse, {"PacketFilter": []}).packet_filter == ()


def test_packet_filters_null_values_kept():
    mr = decode(MapResponse, {"PacketFilters": {"*": None, "base": []}})
    assert mr.packet_filters == {"*": None, "base": ()}


def test_int_keyed_maps():
    mr = decode(MapResponse, {"OnlineChange": {"12": False}, "PeerSeenChange": {"3": True}})
    assert mr.online_change == {12: False} and mr.peer_seen_change == {3: True}
    with pytest.raises(WireError, match="MapResponse.OnlineChange: want integer key, got 'x'"):
        decode(MapResponse, {"OnlineChange": {"x": True}})


def test_bool_is_not_int():
    with pytest.raises(WireError, match="want integer, got bool"):
        decode(MapResponse, {"Node": {"ID": True}})


def test_keepalive_only():
    assert decode(MapResponse, {"KeepAlive": True}).is_keepalive_only()
    assert decode(MapResponse, {"KeepAlive": True, "ControlTime": "2026-01-01T00:00:00Z"}).is_keepalive_only()
    assert not decode(MapResponse, {"KeepAlive": True, "PeersRemoved": [1]}).is_keepalive_only()


def test_legacy_derp_and_allowed_ips_default():
    from engine.tailcfg import Node

    n = decode(Node, {"ID": 1, "DERP": "127.3.3.40:12", "Addresses": ["100.64.0.5/32"], "AllowedIPs": None})
    assert n.effective_home_derp() == 12
    assert n.effective_allowed_ips() == ("100.64.0.5/32",)


def test_time_parsing():
    from engine.tailcfg.timefmt import format_time, parse_time, unix_time

    assert parse_time("0001-01-01T00:00:00Z") is None
    assert unix_time("1970-01-01T00:02:03Z") == 123
    assert unix_time("2026-01-01T00:00:00.123456789Z") == pytest.approx(1767225600.123456)
    assert format_time(parse_time("2026-01-01T00:00:00Z")) == "2026-01-01T00:00:00Z"
    with pytest.raises(ValueError):
        parse_time("yesterday")
