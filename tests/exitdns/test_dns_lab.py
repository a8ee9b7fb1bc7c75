"""MagicDNS end to end in lab namespaces: dig/getent against our server, forwarding to a dnspython upstream host."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from engine.recovery.journal import Journal
from tests.node.labnode import QUAD100_RAW, netns_resolv_conf

HERE = Path(__file__).resolve().parent
ZONE = {"www.example.org.": "203.0.113.80", "app.corp.example.": "203.0.113.81"}
SPEC = {
    "self": {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]},
    "peers": [{"Name": "peer1.tail.example.", "Addresses": ["100.64.0.2/32"]}],
    "dns": {
        "Proxied": True,
        "Domains": ["tail.example"],
        "Resolvers": [{"Addr": "192.0.2.53"}],
        "Routes": {"corp.example": [{"Addr": "192.0.2.54:5353"}]},
    },
    "listen": [["100.100.100.100", 53], ["fd7a:115c:a1e0::53", 53]],
}
ORIGINAL_RESOLV = "# the namespace's own resolv.conf\nnameserver 192.0.2.53\noptions timeout:1\n"


def dig(host, *args: str) -> str:
    return host.run(["dig", "+time=2", "+tries=1", *args]).stdout


@pytest.fixture
def dnslab(lab):
    c, up = lab.host("c"), lab.host("up")
    lab.link(c, up, "192.0.2.1/24", "192.0.2.53/24")
    up.add_addr("eth0", "192.0.2.54/24")
    c.run(["ip", "addr", "add", "100.100.100.100/32", "dev", "lo"])
    c.run(["ip", "addr", "add", "fd7a:115c:a1e0::53/128", "dev", "lo"])
    up.popen_python(str(HERE / "upstream_dns.py"), "192.0.2.53", "53", json.dumps(ZONE))
    split_upstream = up.popen_python(str(HERE / "upstream_dns.py"), "192.0.2.54", "5353", json.dumps(ZONE))
    up.wait_for(["sh", "-c", "ss -lun | grep -q 192.0.2.54:5353 && ss -lun | grep -q 192.0.2.53:53"])
    srv = c.popen_python(str(HERE / "run_magicdns.py"), json.dumps(SPEC))
    c.wait_for(["sh", "-c", "ss -ltn | grep -q 'fd7a:115c:a1e0::53\\]:53'"])
    return c, split_upstream, srv


@pytest.mark.lab
def test_magicdns_answers_and_forwards(dnslab) -> None:
    c, split_upstream, srv = dnslab
    assert dig(c, "@100.100.100.100", "peer1.tail.example", "+short").split() == ["100.64.0.2"]
    assert dig(c, "@fd7a:115c:a1e0::53", "me.tail.example", "AAAA", "+short").split() == ["fd7a:115c:a1e0::1"]
    assert dig(c, "@100.100.100.100", "+tcp", "peer1.tail.example", "+short").split() == ["100.64.0.2"]
    out = dig(c, "@100.100.100.100", "nope.tail.example")
    assert "status: NXDOMAIN" in out and " aa" in out
    assert dig(c, "@100.100.100.100", "-x", "100.64.0.2", "+short").split() == ["peer1.tail.example."]
    # forwarded: default resolver and split route (other port), over UDP and TCP
    assert dig(c, "@100.100.100.100", "www.example.org", "+short").split() == ["203.0.113.80"]
    assert dig(c, "@100.100.100.100", "+tcp", "www.example.org", "+short").split() == ["203.0.113.80"]
    assert dig(c, "@100.100.100.100", "app.corp.example", "+short").split() == ["203.0.113.81"]
    assert "status: NXDOMAIN" in dig(c, "@100.100.100.100", "missing.example.org")
    log = c.log_of(split_upstream)
    assert "udp 192.0.2.1" in log  # the corp route went to the :5353 upstream


@pytest.mark.lab
def test_malformed_and_oversize_queries(dnslab) -> None:
    import dns.message
    import dns.rcode

    c, _, srv = dnslab
    q = dns.message.make_query("peer1.tail.example.", "A").to_wire()
    out = c.exec_python(QUAD100_RAW, (q[:12] + b"\xff\xfe\xfd").hex()).stdout.strip()
    r = dns.message.from_wire(bytes.fromhex(out))
    assert r.rcode() == dns.rcode.FORMERR and r.id == int.from_bytes(q[:2], "big")
    assert c.exec_python(QUAD100_RAW, (q + b"\0" * 5000).hex()).stdout.strip() == "timeout"
    assert c.exec_python(QUAD100_RAW, "00").stdout.strip() == "timeout"
    # the resolver survives all of that
    assert dig(c, "@100.100.100.100", "peer1.tail.example", "+short").split() == ["100.64.0.2"]
    assert srv.poll() is None
    time.sleep(0.6)
    log = c.log_of(srv)
    assert "'oversize': 1" in log and "formerr=1" in log


@pytest.mark.lab
def test_getent_via_resolv_conf(dnslab, tmp_path) -> None:
    c, _, _ = dnslab
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from engine.dns.resolvconf_file import ResolvConfFile\n"
        "from engine.dns.osconfig import OSDNSConfig\n"
        "m = ResolvConfFile(journal_dir=Path(sys.argv[1]))\n"
        "if sys.argv[2] == 'set':\n"
        "    print(m.original_nameservers())\n"
        "    m.set(OSDNSConfig(('100.100.100.100',), ('tail.example',)))\n"
        "else:  # another process: the journal's record of the first one\n"
        "    print(m.cleanup_leftovers())\n"
    )
    with netns_resolv_conf(c.ns, ORIGINAL_RESOLV) as rc:
        assert c.exec_python(code, str(tmp_path), "set").stdout.strip() == "['192.0.2.53']"
        assert "nameserver 100.100.100.100" in rc.read_text()
        assert c.run(["getent", "hosts", "peer1"]).stdout.split()[:2] == ["100.64.0.2", "peer1.tail.example"]
        assert c.run(["getent", "hosts", "www.example.org"]).stdout.split()[0] == "203.0.113.80"
        assert c.exec_python(code, str(tmp_path), "restore").stdout.strip() == "True"
        assert rc.read_text() == ORIGINAL_RESOLV


@pytest.mark.lab
def test_resolv_conf_restored_after_sigkill(lab, tmp_path) -> None:
    c = lab.host("c")
    holder = (
        "import sys, time\nfrom pathlib import Path\n"
        "from engine.dns.resolvconf_file import ResolvConfFile\n"
        "from engine.dns.osconfig import OSDNSConfig\n"
        "ResolvConfFile(journal_dir=Path(sys.argv[1])).set(OSDNSConfig(('100.100.100.100',), ('tail.example',)))\n"
        "print('holding', flush=True)\n"
        "time.sleep(120)\n"
    )
    restart = (
        "import sys\nfrom pathlib import Path\n"
        "from engine.dns.resolvconf_file import ResolvConfFile\n"
        "print(ResolvConfFile(journal_dir=Path(sys.argv[1])).cleanup_leftovers())\n"
    )
    with netns_resolv_conf(c.ns, ORIGINAL_RESOLV) as rc:
        p = c.popen_python(holder, str(tmp_path))
        deadline = time.monotonic() + 20
        while "holding" not in c.log_of(p):
            assert time.monotonic() < deadline and p.poll() is None, c.log_of(p)
            time.sleep(0.05)
        assert rc.read_text().startswith("# resolv.conf written by meshvpn")
        p.send_signal(signal.SIGKILL)
        assert p.wait(10) == -9
        assert [ch.kind for _cid, ch in Journal(tmp_path / "changes.jsonl").pending()] == ["file"]
        assert c.exec_python(restart, str(tmp_path)).stdout.strip() == "True"
        assert rc.read_text() == ORIGINAL_RESOLV
        assert Journal(tmp_path / "changes.jsonl").pending() == []
        assert c.exec_python(restart, str(tmp_path)).stdout.strip() == "False"


MANAGER = (
    "import asyncio, json, signal, sys\nfrom pathlib import Path\n"
    "from engine.dns.manager import DNSManager\n"
    "from engine.dns.resolvconf_file import ResolvConfFile\n"
    "async def main():\n"
    "    spec = json.loads(sys.argv[2])\n"
    "    stop = asyncio.Event()\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    async with DNSManager(ResolvConfFile(journal_dir=Path(sys.argv[1])), listen=[('100.100.100.100', 53)]) as m:\n"
    "        cfg = m.set(spec['self'], spec['peers'], {**spec['dns'], 'Resolvers': None})\n"
    "        print('ready', [str(u) for u in cfg.upstreams], flush=True)\n"
    "        await stop.wait()\n"
    "    print('stopped', flush=True)\n"
    "asyncio.run(main())\n"
)


@pytest.mark.lab
def test_dns_manager_lifecycle(lab, tmp_path) -> None:
    """DNSManager: OS pointed at quad-100, non-tailnet names go to the original nameserver, SIGTERM restores."""
    c, up = lab.host("c"), lab.host("up")
    lab.link(c, up, "192.0.2.1/24", "192.0.2.53/24")
    up.popen_python(str(HERE / "upstream_dns.py"), "192.0.2.53", "53", json.dumps(ZONE))
    up.wait_for(["sh", "-c", "ss -lun | grep -q 192.0.2.53:53"])
    with netns_resolv_conf(c.ns, ORIGINAL_RESOLV) as rc:
        p = c.popen_python(MANAGER, str(tmp_path), json.dumps(SPEC))
        deadline = time.monotonic() + 20
        while "ready" not in c.log_of(p):
            assert time.monotonic() < deadline and p.poll() is None, c.log_of(p)
            time.sleep(0.05)
        # quad-100 appears only now (as when the TUN comes up after the server): IP_FREEBIND bound it anyway
        c.run(["ip", "addr", "add", "100.100.100.100/32", "dev", "lo"])
        assert "['192.0.2.53:53']" in c.log_of(p)  # upstream = the namespace's original resolver
        assert "nameserver 100.100.100.100" in rc.read_text()
        assert c.run(["getent", "hosts", "peer1"]).stdout.split()[0] == "100.64.0.2"
        assert c.run(["getent", "hosts", "www.example.org"]).stdout.split()[0] == "203.0.113.80"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, c.log_of(p)
        assert "stopped" in c.log_of(p)
        assert rc.read_text() == ORIGINAL_RESOLV


@pytest.mark.lab
def test_resolv_conf_overwritten_by_another_program(lab, tmp_path) -> None:
    """A DHCP client rewrites resolv.conf while we run: its server becomes the upstream, MagicDNS is written again,
    and on stop the NEW file (the network's current DNS) is what gets restored, not the stale one."""
    c, up = lab.host("c"), lab.host("up")
    lab.link(c, up, "192.0.2.1/24", "192.0.2.53/24")
    up.add_addr("eth0", "192.0.2.55/24")
    up.popen_python(str(HERE / "upstream_dns.py"), "192.0.2.53", "53", json.dumps(ZONE))
    up.popen_python(str(HERE / "upstream_dns.py"), "192.0.2.55", "53", json.dumps({"www.example.org.": "203.0.113.99"}))
    up.wait_for(["sh", "-c", "ss -lun | grep -q 192.0.2.53:53 && ss -lun | grep -q 192.0.2.55:53"])
    code = MANAGER.replace("        cfg = m.set(", "        m.trample_interval = 0.2\n        cfg = m.set(")
    dhcp = "# written by the DHCP client\nnameserver 192.0.2.55\n"
    with netns_resolv_conf(c.ns, ORIGINAL_RESOLV) as rc:
        p = c.popen_python(code, str(tmp_path), json.dumps(SPEC))
        deadline = time.monotonic() + 20
        while "ready" not in c.log_of(p):
            assert time.monotonic() < deadline and p.poll() is None, c.log_of(p)
            time.sleep(0.05)
        c.run(["ip", "addr", "add", "100.100.100.100/32", "dev", "lo"])
        assert c.run(["getent", "hosts", "www.example.org"]).stdout.split()[0] == "203.0.113.80"
        rc.write_text(dhcp)  # in place, as dhclient does
        deadline = time.monotonic() + 10
        while "nameserver 100.100.100.100" not in rc.read_text():
            assert time.monotonic() < deadline, rc.read_text()
            time.sleep(0.1)
        assert "overwritten by another program" in c.log_of(p)
        assert c.run(["getent", "hosts", "peer1"]).stdout.split()[0] == "100.64.0.2"  # tailnet names work again
        assert c.run(["getent", "hosts", "www.example.org"]).stdout.split()[0] == "203.0.113.99"  # via the new server
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, c.log_of(p)
        assert rc.read_text() == dhcp
