"""Offering an exit node (engine.router.nft): forwarding + masquerade in a lab router namespace."""

from __future__ import annotations

import pytest

from engine.recovery.journal import Journal
from engine.router.exitnode import netns_runner
from engine.router.nft import ForwardConfig, Forwarder, ruleset
from tests.lab.netlab import REPO_ROOT

ECHO = str(REPO_ROOT / "tests" / "lab" / "udp_echo.py")

ASK = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(1.0)\n"
    "for _ in range(3):\n"
    "    s.sendto(b'hi', (sys.argv[1], 3478))\n"
    "    try:\n"
    "        print(s.recvfrom(100)[0].decode()); break\n"
    "    except socket.timeout:\n"
    "        pass\n"
    "else:\n"
    "    print('timeout')\n"
)


def test_ruleset_pure() -> None:
    rs = ruleset(ForwardConfig("tun0"))
    assert 'iifname "tun0" meta mark set meta mark & 0xff00ffff | 0x00040000' in rs
    assert 'oifname != "tun0" meta mark & 0x00ff0000 == 0x00040000 masquerade' in rs
    assert 'oifname "eth9"' in ruleset(ForwardConfig("tun0", wan="eth9"))
    assert "masquerade" not in ruleset(ForwardConfig("tun0", snat=False))
    with pytest.raises(ValueError):
        ruleset(ForwardConfig('tun0"; flush ruleset'))


def _sysctls(h) -> tuple[str, str]:
    return (
        h.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip(),
        h.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip(),
    )


@pytest.mark.lab
def test_exit_masquerade(lab, tmp_path) -> None:
    c, e, i = lab.host("c"), lab.host("exit"), lab.host("inet")
    lab.link(
        c,
        e,
        "100.64.0.2/24",
        "100.64.0.1/24",
        b_ifname="tun0",
        a_addr6="fd7a:115c:a1e0::2/64",
        b_addr6="fd7a:115c:a1e0::1/64",
    )
    lab.link(e, i, "203.0.113.1/24", "203.0.113.2/24", a_addr6="2001:db8:1::1/64", b_addr6="2001:db8:1::2/64")
    c.set_default_route("100.64.0.1")
    c.run(["ip", "-6", "route", "replace", "default", "via", "fd7a:115c:a1e0::1"])
    i.popen_python(ECHO, "0.0.0.0", "3478")
    i.popen_python(ECHO, "2001:db8:1::2", "3478")
    i.wait_for(["sh", "-c", "ss -lun | grep -q 0.0.0.0:3478 && ss -lun | grep -q 2001:db8:1::2"])
    before_sysctl = _sysctls(e)
    before_rules = e.run(["nft", "list", "ruleset"]).stdout

    assert c.exec_python(ASK, "203.0.113.2").stdout.strip() == "timeout"  # no forwarding yet

    fw = Forwarder(netns_runner(e.ns), journal_dir=tmp_path)
    fw.set(ForwardConfig("tun0"))
    fw.set(ForwardConfig("tun0"))  # idempotent
    assert _sysctls(e) == ("1", "1")
    pending = [ch for _cid, ch in Journal(tmp_path / "changes.jsonl").pending()]
    assert sorted(ch.kind for ch in pending) == ["nft-table", "sysctl", "sysctl"]  # the table + what to restore
    seen = c.exec_python(ASK, "203.0.113.2").stdout.strip()
    assert seen.startswith("203.0.113.1:"), seen  # the exit's address, not 100.64.0.2
    seen6 = c.exec_python(ASK, "2001:db8:1::2").stdout.strip()
    assert seen6.startswith("2001:db8:1::1:"), seen6  # IPv6 masqueraded too (inet table)

    fw.set(None)
    assert _sysctls(e) == before_sysctl
    assert e.run(["nft", "list", "ruleset"]).stdout == before_rules
    assert Journal(tmp_path / "changes.jsonl").pending() == []


@pytest.mark.lab
def test_forward_leftovers_after_crash(lab, tmp_path) -> None:
    e = lab.host("exit")
    before = _sysctls(e)
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from engine.router.nft import Forwarder, ForwardConfig\n"
        "Forwarder(journal_dir=Path(sys.argv[1])).set(ForwardConfig('tun0'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert e.exec_python(code, str(tmp_path), check=False).returncode == -9
    assert _sysctls(e) == ("1", "1")
    fw = Forwarder(netns_runner(e.ns), journal_dir=tmp_path)
    assert fw.table_present()
    done = fw.cleanup_leftovers()
    assert "nft table inet meshvpn" in done
    assert _sysctls(e) == before
    assert not fw.table_present()
    assert fw.cleanup_leftovers() == []


def test_forwarding_removed_by_another_program_is_reinstalled(lab, tmp_path) -> None:
    """`nft flush ruleset` or a sysctl reset by someone else: reassert() puts the table and ip_forward back."""
    e = lab.host("exit")
    before = _sysctls(e)
    fw = Forwarder(netns_runner(e.ns), journal_dir=tmp_path)
    assert fw.reassert() == []
    fw.set(ForwardConfig("tun0"))
    table = e.run(["nft", "list", "table", "inet", "meshvpn"]).stdout
    assert fw.reassert() == []
    e.run(["nft", "flush", "ruleset"])
    e.sysctl("net.ipv4.ip_forward", 0)
    assert fw.reassert() == ["nft table inet meshvpn", "net.ipv4.ip_forward=1"]
    assert e.run(["nft", "list", "table", "inet", "meshvpn"]).stdout == table
    assert _sysctls(e)[0] == "1"
    fw.set(None)
    assert _sysctls(e) == before and not fw.table_present()
    assert fw.reassert() == []
