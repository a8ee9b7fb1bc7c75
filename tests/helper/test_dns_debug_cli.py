"""`meshctl dns status|query` and the real `tailscale dns status|query` (1.90.9) against our helper (fake engine)."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.localapi.client import LocalAPIError, LocalClient
from tests.helper.conftest import TAILSCALE, meshctl, tailscale_cli

needs_ts = pytest.mark.skipif(not TAILSCALE.exists(), reason="tailscale CLI not built (installers/dev/build-peers.sh)")


def up(helper) -> None:
    p = meshctl(helper.socket, "up", "--login-server", "http://control.invalid", "--timeout", "20")
    assert p.returncode == 0, p.stderr


def test_meshctl_dns_query_table_json_and_exit_codes(helper):
    s = helper.socket
    p = meshctl(s, "dns", "query", "peer1")
    assert p.returncode == 5 and "needs a running connection (state NeedsLogin)" in p.stderr
    up(helper)

    p = meshctl(s, "dns", "query", "peer1")
    assert p.returncode == 0, p.stderr
    assert "answered by:   MagicDNS itself" in p.stdout and "response code: NOERROR" in p.stdout
    rows = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("peer1.")]
    assert rows == [["peer1.", "600", "IN", "A", "100.64.0.2"]]

    p = meshctl(s, "dns", "query", "--json", "peer1.tail.example.com", "aaaa")
    d = json.loads(p.stdout)
    # self has IPv4, so peers' IPv6 are not served (tailscale's rule without the magicdns-aaaa cap): NODATA -> 1
    assert p.returncode == 1 and d["ResponseCode"] == "NOERROR" and d["AnsweredLocally"] is True
    assert d["QueryType"] == "AAAA" and d["Resolvers"] == [] and d["Answers"] == []

    p = meshctl(s, "dns", "query", "--json", "www.example.org")
    d = json.loads(p.stdout)
    assert p.returncode == 0 and d["Resolvers"] == [{"Addr": "192.0.2.1"}] and not d["AnsweredLocally"]
    assert [(a["Name"], a["Type"], a["Body"]) for a in d["Answers"]] == [("www.example.org.", "A", "192.0.2.80")]

    p = meshctl(s, "dns", "query", "x.lab.example.com", "TXT")
    assert p.returncode == 1 and "forwarded to:  https://doh.lab.example/dns-query (bootstrap 192.0.2.54)" in p.stdout
    assert "response code: NXDOMAIN" in p.stdout
    p = meshctl(s, "dns", "query", "peer1", "MX")
    assert p.returncode == 1 and "has no MX records" in p.stdout
    p = meshctl(s, "dns", "query", "peer1", "AXFR")
    assert p.returncode == 2 and "unknown DNS message type: AXFR" in p.stderr
    p = meshctl(s, "dns", "query", "a..b")
    assert p.returncode == 2 and "label is empty" in p.stderr
    p = meshctl(s, "dns")
    assert p.returncode == 2

    # through an exit node that can proxy DNS, other names go to its peerAPI DoH
    p = meshctl(s, "exit-node", "set", "exit1")
    assert p.returncode == 0, p.stderr
    p = meshctl(s, "dns", "query", "www.example.org")
    assert p.returncode == 0 and "forwarded to:  http://100.64.0.3:40123/dns-query" in p.stdout


def test_meshctl_dns_status(helper):
    s = helper.socket
    p = meshctl(s, "dns", "status")
    assert p.returncode == 5 and "MagicDNS (use the tailnet's DNS): on" in p.stdout and "Logged out" in p.stdout
    up(helper)
    p = meshctl(s, "dns", "status")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for want in (
        "MagicDNS names: enabled tailnet-wide, suffix tail.example.com",
        "This device:    self.tail.example.com",
        "Resolvers:      192.0.2.1",
        "corp.example.com  -> 192.0.2.53",
        "lab.example.com   -> https://doh.lab.example/dns-query (bootstrap 192.0.2.54)",
        "Search domains: tail.example.com",
        "nameservers:    100.100.100.100",
        "match domains:  tail.example.com, corp.example.com, lab.example.com  (all names go to MagicDNS)",
        "system resolvers before meshvpn: 198.51.100.53",
    ):
        assert want in out, out
    d = json.loads(meshctl(s, "dns", "status", "--json").stdout)
    assert d["TailscaleDNS"] is True and d["CurrentTailnet"]["MagicDNSSuffix"] == "tail.example.com"
    assert d["SplitDNSRoutes"]["corp.example.com"] == [{"Addr": "192.0.2.53"}]
    assert d["SystemDNS"]["Nameservers"] == ["198.51.100.53"] and d["SystemDNS"]["MeshvpnApplied"] is True
    assert d["SystemDNS"]["MeshvpnNameservers"] == ["100.100.100.100"]

    p = meshctl(s, "up", "--no-accept-dns")
    assert p.returncode == 0, p.stderr
    p = meshctl(s, "dns", "status")
    assert "MagicDNS (use the tailnet's DNS): off  (turn it on: meshctl up --accept-dns)" in p.stdout
    assert "(left alone: MagicDNS is off; 100.100.100.100 still answers when asked directly)" in p.stdout


def test_dns_debugging_needs_root_or_operator(helper, make_user):
    up(helper)
    u = make_user()
    p = meshctl(helper.socket, "dns", "query", "peer1", user=u)
    assert p.returncode == 4 and "dns-query denied" in p.stderr
    p = meshctl(helper.socket, "dns", "status", user=u)  # the rest is readable; the OS part says why not
    assert p.returncode == 0, p.stderr
    assert "Resolvers:      192.0.2.1" in p.stdout and "access denied" in p.stdout


@needs_ts
def test_tailscale_dns_query_and_status(helper):
    def ts(*args):
        return tailscale_cli(helper.socket, *args)

    up(helper)
    p = ts("dns", "query", "peer1.tail.example.com")
    assert p.returncode == 0, p.stderr
    assert "Response code: RCodeSuccess" in p.stdout
    assert [ln.split() for ln in p.stdout.splitlines() if ln.startswith("peer1.")] == [
        ["peer1.tail.example.com.", "600", "ClassINET", "TypeA", "100.64.0.2"]
    ]

    p = ts("dns", "query", "www.example.org", "a")
    assert "Forwarding to resolver: 192.0.2.1" in p.stdout and "192.0.2.80" in p.stdout, p.stdout + p.stderr
    p = ts("dns", "query", "missing.example.org")
    assert "Response code: RCodeNameError" in p.stdout and "No answers were returned." in p.stdout
    p = ts("dns", "query", "peer1", "axfr")
    assert "failed to query DNS: unknown DNS message type: AXFR" in p.stdout

    p = ts("dns", "status", "--all")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for want in (
        "Tailscale DNS: enabled.",
        "MagicDNS: enabled tailnet-wide (suffix = tail.example.com)",
        "reach this device at self.tail.example.com.",
        "  - 192.0.2.1\n",
        "corp.example.com               -> 192.0.2.53",
        "lab.example.com                -> https://doh.lab.example/dns-query (bootstrap: [192.0.2.54])",
        "printer.tail.example.com",
        "Nameservers:\n  - 198.51.100.53\n",
    ):  # the system's own, as tailscaled
        assert want in out, out


@needs_ts
def test_tailscale_dns_query_denied_for_other_users(helper, make_user):
    up(helper)
    u = make_user()
    p = tailscale_cli(helper.socket, "dns", "query", "peer1", user=u)
    assert "failed to query DNS" in p.stdout and "denied" in p.stdout, p.stdout + p.stderr
    # tailscale 1.90.9's `dns status` reads the netmap from the IPN bus without NotifyNoPrivateKeys, which
    # tailscaled (and so we) refuse to non-operators: the CLI stops there with its sudo hint.
    p = tailscale_cli(helper.socket, "dns", "status", user=u)
    assert p.returncode == 1 and "MagicDNS: enabled tailnet-wide" in p.stdout, p.stdout + p.stderr
    assert "watch IPN bus access denied" in p.stdout + p.stderr


@pytest.mark.parametrize(
    "method,target,status,msg",
    [
        pytest.param("GET", "/localapi/v0/dns-query", 400, "missing 'name' parameter", id="no-name"),
        pytest.param("GET", "/localapi/v0/dns-query?name=", 400, "missing 'name' parameter", id="empty-name"),
        pytest.param("GET", "/localapi/v0/dns-query?name=a..b", 400, "label is empty", id="bad-name"),
        pytest.param(
            "GET", "/localapi/v0/dns-query?name=peer1&type=AXFR", 400, "unknown DNS message type: AXFR", id="bad-type"
        ),
        pytest.param("POST", "/localapi/v0/dns-query?name=peer1", 405, "method POST not allowed", id="post"),
        pytest.param("POST", "/localapi/v0/dns-osconfig", 405, "want GET", id="post-osconfig"),
    ],
)
def test_localapi_dns_errors(helper, method, target, status, msg):
    up(helper)

    async def t():
        with pytest.raises(LocalAPIError) as ei:
            await LocalClient(helper.socket)._do(method, target)
        assert ei.value.status == status and msg in ei.value.message, ei.value

    asyncio.run(t())


def test_localapi_dns_before_login_is_409(helper):
    async def t():
        c = LocalClient(helper.socket)
        for call in (c.dns_os_config(), c.query_dns("peer1")):
            with pytest.raises(LocalAPIError) as ei:
                await call
            assert ei.value.status == 409 and "needs a running connection (state NeedsLogin)" in ei.value.message

    asyncio.run(t())
