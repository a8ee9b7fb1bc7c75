"""DNSManager's resolv.conf watch: re-applies after another program's overwrite, gives up a fight it cannot win."""

from __future__ import annotations

import asyncio
import logging

from engine.dns import manager as mgr
from engine.dns.manager import DNSManager

SELF = {"Name": "me.tail.example.", "Addresses": ["100.64.0.1/32"]}
DNS = {"Proxied": True, "Domains": ["tail.example"]}


class AlwaysTrampled:
    """An OS configurator whose file another program rewrites right after every write of ours."""

    def __init__(self):
        self.sets = []

    def set(self, cfg):
        self.sets.append(cfg)

    def cleanup_leftovers(self):
        return False

    def original_nameservers(self):
        return ["192.0.2.53"]

    def trampled(self):
        return bool(self.sets) and self.sets[-1] is not None


def test_fight_is_given_up_then_resumed_on_new_settings(monkeypatch, caplog):
    monkeypatch.setattr(mgr, "TRAMPLE_LIMIT", 3)
    os_dns = AlwaysTrampled()

    async def main():
        async with DNSManager(os_dns, listen=[("127.0.0.1", 0)]) as m:
            m.trample_interval = 0.01
            m.set(SELF, [], DNS)
            await asyncio.sleep(0.5)
            n = len(os_dns.sets)
            assert n == 1 + 3  # the first write, then three re-applies, then it gave up
            await asyncio.sleep(0.2)
            assert len(os_dns.sets) == n
            m.set(SELF, [], {**DNS, "Domains": ["other.example"]})  # new settings: written, and watched again
            await asyncio.sleep(0.5)
            assert len(os_dns.sets) == n + 1 + 3
        assert os_dns.sets[-1] is None  # restored on exit

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "keeps being overwritten" in caplog.text
