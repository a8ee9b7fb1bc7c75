"""Unit tests of the wg-quick config parser: a full valid file and one test per error."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from engine.dataplane.wgconfig import ConfigError, load, parse

PRIV = base64.b64encode(bytes(range(1, 33))).decode()
PUB1 = base64.b64encode(b"\x11" * 32).decode()
PUB2 = base64.b64encode(b"\x22" * 32).decode()
PSK = base64.b64encode(b"\x33" * 32).decode()

GOOD = f"""# a comment
[Interface]
PrivateKey = {PRIV}
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64
Address = 10.0.1.1/24
MTU = 1380
DNS = 10.0.0.53
FwMark = 0x1234
PostUp = echo hi

[Peer]  # first
PublicKey = {PUB1}
PresharedKey = {PSK}
Endpoint = 192.0.2.2:51820
AllowedIPs = 10.0.0.2/32, fd00::2/128
AllowedIPs = 10.9.0.0/16
PersistentKeepalive = 25

[peer]
publickey={PUB2}
endpoint=[2001:db8::2]:4500
allowedips=0.0.0.0/0
persistentkeepalive = off
"""


def test_parse_full():
    cfg = parse(GOOD, "wg0.conf")
    i = cfg.interface
    assert i.private_key.raw == bytes(range(1, 33))
    assert i.listen_port == 51820 and i.mtu == 1380 and i.fwmark == 0x1234
    assert [str(a) for a in i.addresses] == ["10.0.0.1/24", "fd00::1/64", "10.0.1.1/24"]
    assert i.dns == ("10.0.0.53",)
    assert cfg.warnings == (
        "wg0.conf:8: DNS: ignored (mesh-helper wg does not configure DNS)",
        "wg0.conf:10: PostUp: ignored",
    )
    p1, p2 = cfg.peers
    assert p1.public_key == b"\x11" * 32 and p1.preshared_key.raw == b"\x33" * 32
    assert p1.endpoint == ("192.0.2.2", 51820) and p1.persistent_keepalive == 25
    assert [str(n) for n in p1.allowed_ips] == ["10.0.0.2/32", "fd00::2/128", "10.9.0.0/16"]
    assert p2.endpoint == ("2001:db8::2", 4500) and p2.persistent_keepalive == 0
    assert p2.allowed_ips == (ipaddress.ip_network("0.0.0.0/0"),)
    assert "redacted" in repr(i.private_key) and PRIV not in repr(cfg)


def test_hostname_endpoint_and_decimal_fwmark():
    cfg = parse(f"[Interface]\nFwMark = 51820\n[Peer]\nPublicKey = {PUB1}\nEndpoint = vpn.example.com:51820\n")
    assert cfg.peers[0].endpoint == ("vpn.example.com", 51820)
    assert cfg.interface.fwmark == 51820
    assert parse("[Interface]\nFwMark = off\n").interface.fwmark == 0


def test_load_names_file(tmp_path):
    f = tmp_path / "wg7.conf"
    f.write_text("[Interface]\nListenPort = x\n")
    with pytest.raises(ConfigError, match=r"^wg7\.conf:2: ListenPort: not a number: 'x'$"):
        load(f)
    with pytest.raises(ConfigError, match=r"^nope\.conf:0: file: No such file or directory$"):
        load(tmp_path / "nope.conf")


def _iface(extra: str) -> str:
    return f"[Interface]\nPrivateKey = {PRIV}\n{extra}\n"


def _peer(extra: str) -> str:
    return f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {PUB1}\n{extra}\n"


# One bad line in [Interface] (line 3, after the private key): id -> (line, error after "wg0.conf:3: ").
IFACE_ERRORS = {
    "short_key": ("PrivateKey = abc", "PrivateKey: not a valid base64 32-byte key"),
    "nonbase64_key": ("PrivateKey = " + "!" * 44, "PrivateKey: not a valid base64 32-byte key"),
    "31_byte_key": (
        "PrivateKey = " + base64.b64encode(b"x" * 31).decode(),
        "PrivateKey: not a valid base64 32-byte key",
    ),
    "port_range": ("ListenPort = 70000", "ListenPort: 70000 out of range 0..65535"),
    "port_negative": ("ListenPort = -1", "ListenPort: not a number: '-1'"),
    "fwmark_hex": ("FwMark = 0xzz", "FwMark: not a number: '0xzz'"),
    "fwmark_range": ("FwMark = 4294967296", "FwMark: 4294967296 out of range 0..4294967295"),
    "address": ("Address = 10.0.0.300/24", "Address: not an address/prefix: '10.0.0.300/24'"),
    "mtu_range": ("MTU = 100", "MTU: 100 out of range 576..65535"),
    "mtu_nan": ("MTU = big", "MTU: not a number: 'big'"),
    "unknown_iface_key": ("Colour = blue", "Colour: unknown [Interface] key"),
    "two_interfaces": ("[Interface]", "[Interface]: only one [Interface] section is allowed"),
    "peer_without_key": ("[Peer]\nEndpoint = 192.0.2.1:1", "PublicKey: missing in [Peer] section"),
}

# One bad line in the [Peer] after it (line 5, after the public key): id -> (line, error after "wg0.conf:5: ").
PEER_ERRORS = {
    "pubkey": ("PublicKey = nope", "PublicKey: not a valid base64 32-byte key"),
    "psk": ("PresharedKey = nope", "PresharedKey: not a valid base64 32-byte key"),
    "ep_noport": ("Endpoint = 192.0.2.1", "Endpoint: expected host:port, got '192.0.2.1'"),
    "ep_port0": ("Endpoint = 192.0.2.1:0", "Endpoint: port 0 out of range 1..65535"),
    "ep_port_name": ("Endpoint = 192.0.2.1:http", "Endpoint: not a port: 'http'"),
    "ep_v6_nobrackets": ("Endpoint = 2001:db8::1:51820", "Endpoint: IPv6 endpoints need brackets: '2001:db8::1:51820'"),
    "ep_v6_noport": ("Endpoint = [2001:db8::1]51820", "Endpoint: expected [IPv6]:port, got '[2001:db8::1]51820'"),
    "ep_v4_in_brackets": ("Endpoint = [10.0.0.1]:5", "Endpoint: not an IPv6 address: '10.0.0.1'"),
    "ep_bad_host": ("Endpoint = bad_host!:5", "Endpoint: not an address or host name: 'bad_host!'"),
    "ep_partial_ip": ("Endpoint = 1.2.3:5", "Endpoint: not an address or host name: '1.2.3'"),
    "allowed_ips": ("AllowedIPs = 10.0.0.0/33", "AllowedIPs: not a CIDR prefix: '10.0.0.0/33'"),
    "keepalive_range": ("PersistentKeepalive = 65536", "PersistentKeepalive: 65536 out of range 0..65535"),
    "keepalive_nan": ("PersistentKeepalive = soon", "PersistentKeepalive: not a number: 'soon'"),
    "iface_key_in_peer": ("ListenPort = 1", "ListenPort: unknown [Peer] key"),
}

# Whole files: id -> (text, error).
FILE_ERRORS = {
    "mtu_v6": (_iface("Address = fd00::1/64\nMTU = 1000"), "wg0.conf:4: MTU: 1000 is below 1280, the IPv6 minimum"),
    "outside_section": ("ListenPort = 1\n", "wg0.conf:1: ListenPort: outside of any section"),
    "unknown_section": ("[Interface]\n[Wat]\n", "wg0.conf:2: [Wat]: unknown section (expected [Interface] or [Peer])"),
    "bad_header": ("[Interface\n", "wg0.conf:1: [Interface: malformed section header"),
    "no_equals": ("[Interface]\nJustAWord\n", "wg0.conf:2: JustAWord: expected 'Key = Value'"),
    "no_interface": (f"[Peer]\nPublicKey = {PUB1}\n", "wg0.conf:1: [Interface]: missing [Interface] section"),
    "duplicate_peer": (_peer(f"[Peer]\nPublicKey = {PUB1}"), "wg0.conf:6: PublicKey: duplicate peer (first at line 4)"),
}

ERRORS = {
    **{k: (_iface(line), f"wg0.conf:3: {err}") for k, (line, err) in IFACE_ERRORS.items()},
    **{k: (_peer(line), f"wg0.conf:5: {err}") for k, (line, err) in PEER_ERRORS.items()},
    **FILE_ERRORS,
}


@pytest.mark.parametrize("text,msg", list(ERRORS.values()), ids=list(ERRORS))
def test_errors(text, msg):
    with pytest.raises(ConfigError) as ei:
        parse(text, "wg0.conf")
    assert str(ei.value) == msg


def test_own_public_key_rejected():
    from tests.lab.peers import gen_keypair

    kp = gen_keypair()
    text = f"[Interface]\nPrivateKey = {kp.private}\n[Peer]\nPublicKey = {kp.public}\n"
    with pytest.raises(ConfigError) as ei:
        parse(text, "wg0.conf")
    assert str(ei.value) == "wg0.conf:4: PublicKey: is the interface's own public key"
    assert kp.private not in str(ei.value)
