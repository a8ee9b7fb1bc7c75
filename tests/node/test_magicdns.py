"""Lab: MagicDNS on our node against headscale (dns.magic_dns, base_domain mesh.test): dig, getent, resolv.conf restore.

ctl 192.0.2.1 (headscale)   up 192.0.2.53 (lab upstream DNS: www.example.org -> 203.0.113.80)
a 192.0.2.11 (our node, /etc/netns/<ns>/resolv.conf "nameserver 192.0.2.53")   b 192.0.2.12 (our node)
"""

from __future__ import annotations

import signal

import pytest

from tests.lab.headscale import BASE_DOMAIN
from tests.node.labnode import QUAD100_RAW, DrivenNode, Node, dig, dns_lan, netns_resolv_conf, start_headscale

pytestmark = pytest.mark.lab

ZONE = {"www.example.org.": "203.0.113.80"}
ORIGINAL = "# the namespace's own resolv.conf\nnameserver 192.0.2.53\noptions timeout:1 attempts:2\n"


@pytest.fixture
def net(lab):
    ctl, a, b, up = dns_lan(lab, ZONE)
    hs = start_headscale(ctl)
    key = hs.preauth_key("alice")
    nb = Node(b, hs.url, auth_key=key).start()
    nb.wait_synced(0)
    return hs, key, a, nb


def test_magicdns_names_forwarding_and_restore(net):
    hs, key, a, nb = net
    with netns_resolv_conf(a.ns, ORIGINAL) as rc:
        na = Node(a, hs.url, auth_key=key).start()
        na.wait_synced(1)
        na.wait(lambda s: s["MagicDNS"], "MagicDNS")
        b_ip = nb.ip
        fqdn = f"py-b.{BASE_DOMAIN}"
        assert dig(a, "@100.100.100.100", fqdn, "+short").split() == [b_ip]
        assert dig(a, "@100.100.100.100", "+tcp", fqdn, "+short").split() == [b_ip]
        assert dig(a, "@100.100.100.100", f"py-a.{BASE_DOMAIN}", "+short").split() == [na.ip]
        out = dig(a, "@100.100.100.100", f"nope.{BASE_DOMAIN}")
        assert "status: NXDOMAIN" in out
        assert dig(a, "@100.100.100.100", "-x", b_ip, "+short").split() == [fqdn + "."]
        # not a tailnet name: forwarded to the namespace's original nameserver
        assert dig(a, "@100.100.100.100", "www.example.org", "+short").split() == ["203.0.113.80"]
        # the OS resolver is pointed at quad-100 (search domain = base_domain)
        text = rc.read_text()
        assert "nameserver 100.100.100.100" in text and f"search {BASE_DOMAIN}" in text, text
        assert a.run(["getent", "hosts", "py-b"]).stdout.split()[:2] == [b_ip, fqdn]
        assert a.run(["getent", "hosts", fqdn]).stdout.split()[0] == b_ip
        assert a.run(["getent", "hosts", "www.example.org"]).stdout.split()[0] == "203.0.113.80"

        # junk from a local client: FORMERR or silence, and the node keeps answering
        import dns.message
        import dns.rcode

        qw = dns.message.make_query(fqdn, "A").to_wire()
        out = a.exec_python(QUAD100_RAW, (qw[:12] + b"\xff\xfe").hex()).stdout.strip()
        assert dns.message.from_wire(bytes.fromhex(out)).rcode() == dns.rcode.FORMERR
        for junk in (b"\0", qw + b"\0" * 20000, b"\xff" * 600):  # runt, oversize, a "response"
            assert a.exec_python(QUAD100_RAW, junk.hex()).stdout.strip() == "timeout"
        assert dig(a, "@100.100.100.100", fqdn, "+short").split() == [b_ip]
        assert na.proc.poll() is None

        # stop: the original resolv.conf is back
        assert na.stop() == 0
        assert rc.read_text() == ORIGINAL

        # SIGKILL leaves ours behind; the next start restores it first (here without --accept-dns)
        na.restart()
        na.wait_synced(1)
        na.wait(lambda s: "nameserver 100.100.100.100" in rc.read_text(), "resolv.conf managed again")
        assert na.stop(signal.SIGKILL) == -9
        assert "nameserver 100.100.100.100" in rc.read_text()
        na.restart("--no-accept-dns")
        na.wait_synced(1)
        assert rc.read_text() == ORIGINAL
        assert "cleaned up after a previous run" in na.log() or "restored OS DNS left behind" in na.log()
        # quad-100 still answers with --no-accept-dns (the OS just isn't pointed at it)
        assert dig(a, "@100.100.100.100", fqdn, "+short").split() == [b_ip]
        assert na.stop() == 0
        assert rc.read_text() == ORIGINAL


def test_accept_dns_toggled_at_run_time(net):
    hs, key, a, nb = net
    with netns_resolv_conf(a.ns, ORIGINAL) as rc:
        na = DrivenNode(a, hs.url, auth_key=key, args=("--no-accept-dns",)).start()
        na.wait_synced(1)
        assert rc.read_text() == ORIGINAL
        assert na.call("set_accept_dns", True)["accept_dns"] is True
        assert "nameserver 100.100.100.100" in rc.read_text()
        assert a.run(["getent", "hosts", "py-b"]).stdout.split()[0] == nb.ip
        na.call("set_accept_dns", False)
        assert rc.read_text() == ORIGINAL
        assert na.stop() == 0
        assert rc.read_text() == ORIGINAL
