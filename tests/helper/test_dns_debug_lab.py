"""Lab: our engine and a real tailscaled on Headscale: `meshctl dns query <peer>`/`tailscale dns query` give its IP."""

from __future__ import annotations

import json
import signal

import pytest

from tests.control.nodes import headscale_lan
from tests.helper.conftest import TAILSCALE, meshctl, tailscale_cli
from tests.helper.test_real_engine_lab import CTL, start_helper, status, up_with_key, wait_until
from tests.lab.headscale import BASE_DOMAIN
from tests.lab.tailscaled import Tailscaled
from tests.node.labnode import UPSTREAM_DNS

pytestmark = [pytest.mark.lab, pytest.mark.skipif(not TAILSCALE.exists(), reason="reference peers not built")]

SPLIT_DOMAIN = "corp.test"
SPLIT_ZONE = {f"intranet.{SPLIT_DOMAIN}.": "10.9.8.7"}


@pytest.fixture
def dns_net(lab):
    """headscale with a split-DNS route corp.test -> a dnspython server on the control host (192.0.2.1:53)."""
    hs, host = headscale_lan(lab, extra_config={"dns": {"nameservers": {"split": {SPLIT_DOMAIN: [CTL]}}}})
    hs.host.popen_python(UPSTREAM_DNS, CTL, "53", json.dumps(SPLIT_ZONE))
    return lab, hs, host


def test_dns_query_and_status_with_the_real_engine(dns_net):
    lab, hs, host = dns_net
    key = hs.preauth_key("alice")
    t = Tailscaled(host("t", 13)).start()
    t.up(hs.url, key, "go-t")
    a = host("a", 11)
    sock, proc = start_helper(a, lab)
    try:
        p = up_with_key(sock, hs.url, key, lab, "py-a")
        assert p.returncode == 0, p.stdout + p.stderr + a.log_of(proc)[-3000:]
        go_t = wait_until(
            lambda: next((v for v in (status(sock).get("Peer") or {}).values() if v["HostName"] == "go-t"), None),
            "go-t in our status",
        )
        v4 = next(ip for ip in go_t["TailscaleIPs"] if ":" not in ip)
        fqdn = go_t["DNSName"]
        assert fqdn.endswith(f".{BASE_DOMAIN}."), fqdn

        def answered(name: str):
            r = meshctl(sock, "dns", "query", "--json", name)
            return json.loads(r.stdout) if r.returncode == 0 else None

        d = wait_until(lambda: answered(fqdn), f"{fqdn} answered by MagicDNS", 30)
        assert [a_["Body"] for a_ in d["Answers"]] == [v4] and d["AnsweredLocally"], d
        d = answered("go-t")  # short name: expanded with the tailnet's search domain
        assert d is not None and [a_["Body"] for a_ in d["Answers"]] == [v4], d
        p = meshctl(sock, "dns", "query", f"nosuchhost.{BASE_DOMAIN}")
        assert p.returncode == 1 and "NXDOMAIN" in p.stdout, p.stdout + p.stderr

        # split DNS: forwarded by the real engine's MagicDNS to the route's resolver
        d = wait_until(lambda: answered(f"intranet.{SPLIT_DOMAIN}"), "split-DNS name answered", 30)
        assert [a_["Body"] for a_ in d["Answers"]] == ["10.9.8.7"] and d["Resolvers"] == [{"Addr": CTL}], d

        p = tailscale_cli(sock, "dns", "query", fqdn)
        assert p.returncode == 0 and "RCodeSuccess" in p.stdout and v4 in p.stdout, p.stdout + p.stderr

        p = meshctl(sock, "dns", "status")
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"suffix {BASE_DOMAIN}" in p.stdout and f"py-a.{BASE_DOMAIN}" in p.stdout, p.stdout
        assert f"{SPLIT_DOMAIN}  -> {CTL}" in p.stdout, p.stdout
        # headscale sends the tailnet's reverse zones (100.64/10 per /16, fd7a:115c:a1e0::/48) as routes
        # without resolvers
        assert "Answered only by MagicDNS: 65 reverse zones" in p.stdout, p.stdout
        # the lab namespace shares the host's /etc/resolv.conf: MagicDNS leaves the OS alone there
        assert "left alone: --dns-mode none, or a network namespace sharing" in p.stdout, p.stdout
        p = tailscale_cli(sock, "dns", "status")
        assert p.returncode == 0 and f"suffix = {BASE_DOMAIN}" in p.stdout, p.stdout + p.stderr
        assert f"{SPLIT_DOMAIN}" in p.stdout and f"-> {CTL}" in p.stdout, p.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, a.log_of(proc)[-3000:]
