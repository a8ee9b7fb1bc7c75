"""Exit-node policy routing (engine.router.exitnode) in a lab namespace with a real TUN."""

from __future__ import annotations

import json

import pytest

from engine.recovery.journal import Journal
from engine.router.exitnode import (
    BYPASS_MARK,
    ExitRouteConfig,
    ExitRouter,
    desired_routes,
    desired_rules,
    netns_runner,
    offers_exit_node,
)


def _journaled(d) -> list[str]:
    """Kinds of the changes pending in the journal of OS changes in `d`."""
    return [ch.kind for _cid, ch in Journal(d / "changes.jsonl").pending()]


def test_desired_rules_and_routes_pure() -> None:
    rules = desired_rules((4,))
    assert [r.priority for r in rules] == [5210, 5230, 5250, 5270]
    assert rules[0].add_argv() == [
        "ip",
        "-4",
        "rule",
        "add",
        "pref",
        "5210",
        "fwmark",
        "0x80000/0xff0000",
        "table",
        "main",
    ]
    assert rules[2].add_argv()[-1] == "unreachable"
    assert rules[3].add_argv() == ["ip", "-4", "rule", "add", "pref", "5270", "table", "52"]
    routes = desired_routes(ExitRouteConfig("tun0", allow_lan=True), ["192.168.1.0/24", "fd00::/64", "0.0.0.0/0"])
    assert [r.replace_argv() for r in routes] == [
        ["ip", "-4", "route", "replace", "default", "dev", "tun0", "table", "52"],
        ["ip", "-6", "route", "replace", "default", "dev", "tun0", "table", "52"],
        ["ip", "-4", "route", "replace", "throw", "192.168.1.0/24", "table", "52"],
        ["ip", "-6", "route", "replace", "throw", "fd00::/64", "table", "52"],
    ]
    assert len(desired_routes(ExitRouteConfig("tun0"), ["192.168.1.0/24"])) == 2


def test_offers_exit_node() -> None:
    assert offers_exit_node(["100.64.0.3/32", "0.0.0.0/0", "::/0"])
    assert not offers_exit_node(["100.64.0.3/32", "0.0.0.0/0"])
    assert not offers_exit_node(None)


def _client(lab):
    """Client c on a LAN (192.168.50.0/24, fd00:50::/64) behind gateway g, plus a real TUN 'tun0'."""
    c, g = lab.host("c"), lab.host("g")
    lab.link(c, g, "192.168.50.2/24", "192.168.50.1/24", a_addr6="fd00:50::2/64", b_addr6="fd00:50::1/64")
    c.set_default_route("192.168.50.1")
    c.run(["ip", "-6", "route", "replace", "default", "via", "fd00:50::1"])
    c.run(["ip", "tuntap", "add", "mode", "tun", "name", "tun0"])
    c.run(["ip", "link", "set", "tun0", "up"])
    c.add_addr("tun0", "100.64.0.5/32")
    c.add_addr("tun0", "fd7a:115c:a1e0::5/128")
    return c


def _dump(host) -> str:
    parts = []
    for fam in ("-4", "-6"):
        parts.append(host.run(["ip", fam, "rule", "show"]).stdout)
        parts.append(host.run(["ip", fam, "route", "show", "table", "all"]).stdout)
    return "\n".join(parts)


def _route_get(host, dst: str, mark: int | None = None) -> str:
    argv = ["ip", "route", "get", dst] + (["mark", hex(mark)] if mark else [])
    return host.run(argv).stdout


@pytest.mark.lab
def test_exit_routing_set_and_restore(lab, tmp_path) -> None:
    c = _client(lab)
    before = _dump(c)
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path)
    assert "dev eth0" in _route_get(c, "198.51.100.1")

    r.set(ExitRouteConfig("tun0"))
    got = _route_get(c, "198.51.100.1")
    assert "dev tun0" in got and "table 52" in got
    assert "dev tun0" in _route_get(c, "2001:db8::1")
    # the helper's own (marked) traffic still leaves via the LAN gateway
    marked = _route_get(c, "198.51.100.1", BYPASS_MARK)
    assert "via 192.168.50.1 dev eth0" in marked
    assert "dev eth0" in _route_get(c, "2001:db8::1", BYPASS_MARK)
    # without allow-LAN the LAN goes through the tunnel too
    assert "dev tun0" in _route_get(c, "192.168.50.7")
    # journaled: 4 rules + 1 default route per family
    assert sorted(_journaled(tmp_path)) == ["route"] * 2 + ["rule"] * 8

    once = _dump(c)
    r.set(ExitRouteConfig("tun0"))  # idempotent
    assert _dump(c) == once

    r.set(ExitRouteConfig("tun0", allow_lan=True))
    assert "dev eth0" in _route_get(c, "192.168.50.7")
    assert "dev eth0" in _route_get(c, "fd00:50::7")
    assert "dev tun0" in _route_get(c, "198.51.100.1")

    r.set(ExitRouteConfig("tun0", allow_lan=False))
    assert "dev tun0" in _route_get(c, "192.168.50.7")
    assert _dump(c) == once

    r.set(None)
    assert _dump(c) == before
    assert _journaled(tmp_path) == []
    r.set(None)  # idempotent
    assert _dump(c) == before


@pytest.mark.lab
def test_marked_socket_uses_lan_source(lab, tmp_path) -> None:
    """A real socket with SO_MARK 0x80000 (mark_socket) bypasses table 52; an unmarked one doesn't."""
    c = _client(lab)
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path)
    r.set(ExitRouteConfig("tun0"))
    code = (
        "import socket\n"
        "from engine.router.exitnode import mark_socket\n"
        "for marked in (False, True):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "    if marked: mark_socket(s)\n"
        "    s.connect(('198.51.100.1', 9))\n"
        "    print(s.getsockname()[0])\n"
    )
    out = c.exec_python(code).stdout.split()
    assert out == ["100.64.0.5", "192.168.50.2"]
    r.set(None)


@pytest.mark.lab
def test_leftovers_after_crash_are_removed(lab, tmp_path) -> None:
    c = _client(lab)
    before = _dump(c)
    # A helper process sets exit routing and is SIGKILLed.
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from engine.router.exitnode import ExitRouter, ExitRouteConfig\n"
        "ExitRouter(journal_dir=Path(sys.argv[1])).set(ExitRouteConfig('tun0', allow_lan=True))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = c.exec_python(code, str(tmp_path), check=False)
    assert p.returncode == -9
    assert "table 52" in _route_get(c, "198.51.100.1")
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path)
    rules, routes = r.find_leftovers()
    assert len(rules) == 8 and {rt.kind for rt in routes} == {"dev", "throw"}
    removed = r.cleanup_leftovers()
    assert removed
    assert _dump(c) == before
    assert r.find_leftovers() == ([], [])
    assert _journaled(tmp_path) == []
    assert r.cleanup_leftovers() == []


@pytest.mark.lab
def test_foreign_rule_at_our_priority_is_kept(lab, tmp_path) -> None:
    c = _client(lab)
    c.run(["ip", "rule", "add", "pref", "5210", "from", "10.9.9.9", "table", "main"])
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path)
    r.set(ExitRouteConfig("tun0", ipv6=False))
    r.set(None)
    rules = json.loads(c.run(["ip", "-j", "rule", "show"]).stdout)
    assert [e for e in rules if e["priority"] == 5210] == [{"priority": 5210, "src": "10.9.9.9", "table": "main"}]


@pytest.mark.lab
def test_rules_and_routes_removed_by_another_program_are_reinstalled(lab, tmp_path) -> None:
    """`ip rule del` / `ip route flush table 52` by someone else (networkd, an admin): reassert() puts them back."""
    c = _client(lab)
    before = _dump(c)
    r = ExitRouter(netns_runner(c.ns), journal_dir=tmp_path)
    assert r.reassert() == []  # no exit node: nothing to check
    r.set(ExitRouteConfig("tun0"))
    want = _dump(c)
    assert r.reassert() == []  # all there
    c.run(["ip", "-4", "rule", "del", "pref", "5270"])
    c.run(["ip", "-6", "route", "flush", "table", "52"])
    assert "dev eth0" in _route_get(c, "198.51.100.1")  # the leak another program caused ...
    missing = r.reassert()
    assert missing == ["IPv4 rule pref 5270 table 52", "IPv6 route default dev tun0 table 52"], missing
    assert _dump(c) == want  # ... is closed again
    assert "dev tun0" in _route_get(c, "198.51.100.1")
    c.run(["ip", "rule", "flush"])  # everything, main/default lookups included
    c.run(["ip", "rule", "add", "pref", "32766", "table", "main"])  # (the admin restores the system's own)
    c.run(["ip", "rule", "add", "pref", "32767", "table", "default"])
    assert len(r.reassert()) == 4
    assert _dump(c) == want
    r.set(None)
    assert _dump(c) == before
    assert r.reassert() == []
