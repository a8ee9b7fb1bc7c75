"""Lab: ResolvedConfigurator's resolvectl sequence against a real systemd-resolved on a private bus.

host a: mount namespace with dbus-daemon + systemd-resolved; TUN `mesh0` (ip tuntap, persistent)
"""

from __future__ import annotations

import pytest

from engine.dns.osconfig import OSDNSConfig
from engine.dns.resolved import ResolvedConfigurator
from tests.resolved.resolvedlab import PrivateResolved

pytestmark = pytest.mark.lab

SPLIT = OSDNSConfig(("100.100.100.100",), ("mesh.test",), ("mesh.test", "corp.example"), route_all=False)
ALL = OSDNSConfig(("100.100.100.100",), ("mesh.test",), ("mesh.test",), route_all=True)


def link_state(pr: PrivateResolved, link: str) -> dict[str, str]:
    """`resolvectl status <link>` as {field: value} (continuation lines joined)."""
    out = pr.resolvectl("status", link).stdout
    fields: dict[str, str] = {}
    key = None
    for line in out.splitlines()[1:]:
        if ":" in line and not line.startswith(" " * 16):
            key, _, val = line.partition(":")
            key = key.strip()
            fields[key] = val.strip()
        elif key:
            fields[key] += " " + line.strip()
    return fields


@pytest.fixture
def resolved(lab, resolved_cache):
    a = lab.host("a")
    pr = PrivateResolved(a).start()
    pr.host.run(["ip", "tuntap", "add", "mesh0", "mode", "tun"])
    pr.host.run(["ip", "link", "set", "mesh0", "up"])
    return pr


def test_set_split_all_revert(resolved) -> None:
    pr = resolved
    run = lambda argv, input=None, check=True: pr.host.run(list(argv), check=check).stdout  # noqa: E731
    rc = ResolvedConfigurator("mesh0", run)
    assert link_state(pr, "mesh0").get("DNS Servers") is None

    rc.set(SPLIT)
    st = link_state(pr, "mesh0")
    assert st["DNS Servers"] == "100.100.100.100"
    assert st["DNS Domain"].split() == ["mesh.test", "~corp.example"]
    assert "-DefaultRoute" in st["Protocols"] and "-LLMNR" in st["Protocols"] and "-mDNS" in st["Protocols"]

    rc.set(ALL)
    st = link_state(pr, "mesh0")
    assert st["DNS Domain"].split() == ["mesh.test", "~."]
    assert "+DefaultRoute" in st["Protocols"]

    rc.set(None)
    st = link_state(pr, "mesh0")
    assert "DNS Servers" not in st and "DNS Domain" not in st
    assert "100.100.100.100" not in pr.host.run(["cat", "/run/systemd/resolve/resolv.conf"]).stdout
    assert pr.alive(), pr.log()[-3000:]


def test_leftovers_after_crash_and_vanished_link(resolved) -> None:
    pr = resolved
    run = lambda argv, input=None, check=True: pr.host.run(list(argv), check=check).stdout  # noqa: E731
    ResolvedConfigurator("mesh0", run).set(SPLIT)  # "crashes" here: the (persistent) link keeps the config
    assert link_state(pr, "mesh0")["DNS Servers"] == "100.100.100.100"

    fresh = ResolvedConfigurator("mesh0", run)  # the next start
    fresh.cleanup_leftovers()
    st = link_state(pr, "mesh0")
    assert "DNS Servers" not in st and "DNS Domain" not in st

    fresh.set(SPLIT)
    pr.host.run(["ip", "link", "del", "mesh0"])  # the TUN goes away under us (helper killed, device removed)
    fresh.set(None)  # must not raise on the vanished link
    fresh.cleanup_leftovers()
    assert "mesh0" not in pr.resolvectl("dns").stdout
    assert "100.100.100.100" not in pr.host.run(["cat", "/run/systemd/resolve/resolv.conf"]).stdout
    assert pr.alive(), pr.log()[-3000:]
