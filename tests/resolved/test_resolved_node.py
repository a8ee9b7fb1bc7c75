"""Lab: our node's MagicDNS through a real systemd-resolved (per-link DNS on the TUN), incl. stop and SIGKILL.

ctl 192.0.2.1 (headscale, magic_dns, base_domain mesh.test)   up 192.0.2.53 (lab DNS: www.example.org)
a 192.0.2.11: private mount ns with dbus-daemon + systemd-resolved (DNS=192.0.2.53), /etc/resolv.conf
              "nameserver 127.0.0.53"; our node with --dns-mode auto (must detect resolved)
b 192.0.2.12: our node
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.control.nodes import wait_until
from tests.lab.headscale import BASE_DOMAIN, Headscale
from tests.node.labnode import Node, dns_lan, netns_resolv_conf
from tests.resolved.resolvedlab import PrivateResolved
from tests.resolved.test_resolved_configurator import link_state

pytestmark = pytest.mark.lab

ZONE = {"www.example.org.": "203.0.113.80"}
TUN = "mesh0"


OVERRIDE = {"dns": {"override_local_dns": True, "nameservers": {"global": ["192.0.2.53"]}}}


@pytest.fixture(params=[None, OVERRIDE], ids=["split", "override_local_dns"])
def net(lab, resolved_cache, request):
    ctl, a, b, up = dns_lan(lab, ZONE)
    hs = Headscale(ctl, extra_config=request.param).start()
    key = hs.preauth_key("alice")
    nb = Node(b, hs.url, auth_key=key).start()
    nb.wait_synced(0)
    # resolved's own upstream is a server that does not exist: with override_local_dns every
    # name must go through quad-100 (which forwards to the tailnet's global nameserver).
    upstream = "192.0.2.53" if request.param is None else "192.0.2.99"
    # The daemon changes OS DNS in a named namespace only when it has /etc/netns/<ns>/resolv.conf.
    with netns_resolv_conf(a.ns, "nameserver 127.0.0.53\n"):
        pr = PrivateResolved(a, upstream_dns=upstream).start()
        yield hs, key, pr, nb, request.param is not None


def tun_configured(pr: PrivateResolved) -> bool:
    r = pr.resolvectl("status", TUN, check=False)
    return r.returncode == 0 and "DNS Servers: 100.100.100.100" in r.stdout


def no_trace_of_tun(pr: PrivateResolved) -> bool:
    """resolved carries no config for our link: not in its link list, not in its resolv.conf."""
    dns, domains = pr.resolvectl("dns").stdout, pr.resolvectl("domain").stdout
    rc = pr.host.run(["cat", "/run/systemd/resolve/resolv.conf"]).stdout
    return "100.100.100.100" not in dns + rc and BASE_DOMAIN not in domains + rc


def query(pr: PrivateResolved, name: str) -> list[str]:
    """A records via resolved's D-Bus API (`resolvectl query -t A`: "<name> IN A <ip>  -- link: <if>")."""
    r = pr.resolvectl("query", "-t", "A", "--cache=no", "--legend=no", name, check=False)
    return re.findall(r" IN A (\S+)", r.stdout) if r.returncode == 0 else []


def lookup(pr: PrivateResolved, name: str) -> list[str]:
    """Hostname resolution via resolved's D-Bus API (search domains apply; `resolvectl query -4`)."""
    r = pr.resolvectl("query", "-4", "--cache=no", "--legend=no", name, check=False)
    return re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", r.stdout) if r.returncode == 0 else []


def getent(pr: PrivateResolved, name: str) -> list[str]:
    return pr.host.run(["getent", "ahostsv4", name], check=False).stdout.split()[:1]


def test_magicdns_through_resolved_stop_and_sigkill(net):
    hs, key, pr, nb, override = net
    na = Node(pr.host, hs.url, auth_key=key, args=("--dns-mode", "auto")).start()
    na.wait_synced(1)
    na.wait(lambda s: s["MagicDNS"], "MagicDNS")
    wait_until(lambda: tun_configured(pr), "resolved has DNS for the TUN", timeout=30)

    st = link_state(pr, TUN)
    assert st["DNS Servers"] == "100.100.100.100"
    if override:  # global nameservers: every name goes to quad-100
        assert st["DNS Domain"].split() == [BASE_DOMAIN, "~."]
        assert "+DefaultRoute" in st["Protocols"]
    else:  # split DNS: search + route for the tailnet domain only
        assert st["DNS Domain"].split() == [BASE_DOMAIN]
        assert "-DefaultRoute" in st["Protocols"]

    b_fqdn = f"py-b.{BASE_DOMAIN}"
    # tailnet names: resolved routes them to quad-100 on the TUN (D-Bus API, stub, NSS via resolv.conf)
    assert query(pr, b_fqdn) == [nb.ip]
    out = pr.host.run(["dig", "+time=2", "+tries=2", "@127.0.0.53", b_fqdn, "+short"], check=False).stdout
    assert out.split() == [nb.ip]
    assert lookup(pr, "py-b") == [nb.ip]  # single label: resolved applies the link's search domain
    stub = pr.host.run(["cat", "/run/systemd/resolve/stub-resolv.conf"]).stdout
    assert f"search {BASE_DOMAIN}" in stub, stub
    assert getent(pr, b_fqdn) == [nb.ip]  # libc -> 127.0.0.53 -> quad-100
    assert getent(pr, f"py-a.{BASE_DOMAIN}") == [na.ip]
    # other names: resolved's own upstream (split) or quad-100's forwarder (override)
    assert query(pr, "www.example.org") == ["203.0.113.80"]
    assert getent(pr, "www.example.org") == ["203.0.113.80"]

    # stop: the link's DNS is reverted (and the TUN is gone)
    assert na.stop() == 0
    wait_until(lambda: no_trace_of_tun(pr), "no config for the TUN after stop", timeout=15)
    assert query(pr, b_fqdn) == []
    assert query(pr, "www.example.org") == ([] if override else ["203.0.113.80"])

    # SIGKILL: resolved drops the link's config with the link; the restart configures it afresh
    na.restart("--dns-mode", "auto", auth_key=key)
    na.wait_synced(1)
    wait_until(lambda: tun_configured(pr), "resolved has DNS for the TUN again", timeout=30)
    assert na.stop(signal.SIGKILL) == -9
    wait_until(lambda: no_trace_of_tun(pr), "no config for the TUN after SIGKILL", timeout=15)
    na.restart("--dns-mode", "resolved", auth_key=key)
    na.wait_synced(1)
    wait_until(lambda: tun_configured(pr), "resolved has DNS for the TUN after the restart", timeout=30)
    assert query(pr, b_fqdn) == [nb.ip]
    assert na.stop() == 0
    wait_until(lambda: no_trace_of_tun(pr), "no config for the TUN after the final stop", timeout=15)
    assert pr.alive(), pr.log()[-3000:]
