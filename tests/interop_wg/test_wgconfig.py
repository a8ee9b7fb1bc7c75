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
    assert cfg.warnings == ("wg0.conf:8: DNS: ignored (mesh-helper wg does not configure DNS)",
                            "wg0.conf:10: PostUp: ignored")
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


@pytest.mark.parametrize("text,msg", [
    pytest.param(_iface("PrivateKey = abc"), "wg0.conf:3: PrivateKey: not a valid base64 32-byte key", id="short_key"),
    pytest.param(_iface("PrivateKey = " + "!" * 44), "wg0.conf:3: PrivateKey: not a valid base64 32-byte key",
                 id="nonbase64_key"),
    pytest.param(_iface("PrivateKey = " + base64.b64encode(b"x" * 31).decode()),
                 "wg0.conf:3: PrivateKey: not a valid base64 32-byte key", id="31_byte_key"),
    pytest.param(_iface("ListenPort = 70000"), "wg0.conf:3: ListenPort: 70000 out of range 0..65535", id="port_range"),
    pytest.param(_iface("ListenPort = -1"), "wg0.conf:3: ListenPort: not a number: '-1'", id="port_negative"),
    pytest.param(_iface("FwMark = 0xzz"), "wg0.conf:3: FwMark: not a number: '0xzz'", id="fwmark_hex"),
    pytest.param(_iface("FwMark = 4294967296"), "wg0.conf:3: FwMark: 4294967296 out of range 0..4294967295",
                 id="fwmark_range"),
    pytest.param(_iface("Address = 10.0.0.300/24"), "wg0.conf:3: Address: not an address/prefix: '10.0.0.300/24'",
                 id="address"),
    pytest.param(_iface("MTU = 100"), "wg0.conf:3: MTU: 100 out of range 576..65535", id="mtu_range"),
    pytest.param(_iface("MTU = big"), "wg0.conf:3: MTU: not a number: 'big'", id="mtu_nan"),
    pytest.param(_iface("Address = fd00::1/64\nMTU = 1000"), "wg0.conf:4: MTU: 1000 is below 1280, the IPv6 minimum",
                 id="mtu_v6"),
    pytest.param(_iface("Colour = blue"), "wg0.conf:3: Colour: unknown [Interface] key", id="unknown_iface_key"),
    pytest.param(_iface("[Interface]"), "wg0.conf:3: [Interface]: only one [Interface] section is allowed",
                 id="two_interfaces"),
    pytest.param("ListenPort = 1\n", "wg0.conf:1: ListenPort: outside of any section", id="outside_section"),
    pytest.param("[Interface]\n[Wat]\n", "wg0.conf:2: [Wat]: unknown section (expected [Interface] or [Peer])",
                 id="unknown_section"),
    pytest.param("[Interface\n", "wg0.conf:1: [Interface: malformed section header", id="bad_header"),
    pytest.param("[Interface]\nJustAWord\n", "wg0.conf:2: JustAWord: expected 'Key = Value'", id="no_equals"),
    pytest.param(f"[Peer]\nPublicKey = {PUB1}\n", "wg0.conf:1: [Interface]: missing [Interface] section",
                 id="no_interface"),
    pytest.param(_peer("PublicKey = nope"), "wg0.conf:5: PublicKey: not a valid base64 32-byte key", id="pubkey"),
    pytest.param(_peer("PresharedKey = nope"), "wg0.conf:5: PresharedKey: not a valid base64 32-byte key", id="psk"),
    pytest.param(_peer("Endpoint = 192.0.2.1"), "wg0.conf:5: Endpoint: expected host:port, got '192.0.2.1'",
                 id="ep_noport"),
    pytest.param(_peer("Endpoint = 192.0.2.1:0"), "wg0.conf:5: Endpoint: port 0 out of range 1..65535", id="ep_port0"),
    pytest.param(_peer("Endpoint = 192.0.2.1:http"), "wg0.conf:5: Endpoint: not a port: 'http'", id="ep_port_name"),
    pytest.param(_peer("Endpoint = 2001:db8::1:51820"),
                 "wg0.conf:5: Endpoint: IPv6 endpoints need brackets: '2001:db8::1:51820'", id="ep_v6_nobrackets"),
    pytest.param(_peer("Endpoint = [2001:db8::1]51820"), "wg0.conf:5: Endpoint: expected [IPv6]:port, got '[2001:db8::1]51820'",
                 id="ep_v6_noport"),
    pytest.param(_peer("Endpoint = [10.0.0.1]:5"), "wg0.conf:5: Endpoint: not an IPv6 address: '10.0.0.1'",
                 id="ep_v4_in_brackets"),
    pytest.param(_peer("Endpoint = bad_host!:5"), "wg0.conf:5: Endpoint: not an address or host name: 'bad_host!'",
                 id="ep_bad_host"),
    pytest.param(_peer("Endpoint = 1.2.3:5"), "wg0.conf:5: Endpoint: not an address or host name: '1.2.3'",
                 id="ep_partial_ip"),
    pytest.param(_peer("AllowedIPs = 10.0.0.0/33"), "wg0.conf:5: AllowedIPs: not a CIDR prefix: '10.0.0.0/33'",
                 id="allowed_ips"),
    pytest.param(_peer("PersistentKeepalive = 65536"), "wg0.conf:5: PersistentKeepalive: 65536 out of range 0..65535",
                 id="keepalive_range"),
    pytest.param(_peer("PersistentKeepalive = soon"), "wg0.conf:5: PersistentKeepalive: not a number: 'soon'",
                 id="keepalive_nan"),
    pytest.param(_peer("ListenPort = 1"), "wg0.conf:5: ListenPort: unknown [Peer] key", id="iface_key_in_peer"),
    pytest.param(_iface("[Peer]\nEndpoint = 192.0.2.1:1"), "wg0.conf:3: PublicKey: missing in [Peer] section",
                 id="peer_without_key"),
    pytest.param(_peer(f"[Peer]\nPublicKey = {PUB1}"), "wg0.conf:6: PublicKey: duplicate peer (first at line 4)",
                 id="duplicate_peer"),
])
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
