"""Pair tests: our transport and control client against an in-process fake control server on loopback."""

import asyncio
import json

import pytest

from engine.control.client import ControlClient, ControlOptions, NetMapUpdated, State
from engine.control.transport import ControlConn, ControlTransportError, UpgradeError, fetch_server_key
from engine.tailcfg import CURRENT_CAPABILITY_VERSION, Hostinfo
from engine.types.keys import DiscoPrivate, MachinePrivate, NodePrivate
from tests.unit.control.fakecontrol import FakeControl

V = CURRENT_CAPABILITY_VERSION
SELF = {"ID": 1, "Name": "me.t.", "Key": "nodekey:" + "01" * 32, "Addresses": ["100.64.0.1/32"]}


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_dial_early_payload_and_request():
    async def main():
        async with FakeControl() as fc:
            key = await fetch_server_key(fc.url, V)
            assert key == fc.key.public()
            async with ControlConn.dial(fc.url, MachinePrivate.generate(), key, V) as conn:
                early = await conn.wait_early_payload()
                assert str(early.node_key_challenge) == "chalpub:" + "07" * 32
                r = await conn.request("POST", "/machine/register", b'{"Version":130}')
                assert r.status == 200 and json.loads(r.body)["MachineAuthorized"] is True
                big = json.dumps({"Version": 130, "Pad": "x" * 200_000}).encode()  # > flow-control window chunks
                r = await conn.request("POST", "/machine/register", big)
                assert r.status == 200
            assert fc.requests[1][1]["Pad"] == "x" * 200_000

    run(main())


@pytest.mark.parametrize(
    "mode,exc,msg",
    [
        ("http400", UpgradeError, "upgrade failed: HTTP 400"),
        ("eof", ControlTransportError, "closed the connection during the handshake"),
    ],
)
def test_dial_failures(mode, exc, msg):
    async def main():
        async with FakeControl(mode) as fc:
            with pytest.raises(exc, match=msg):
                async with ControlConn.dial(fc.url, MachinePrivate.generate(), fc.key.public(), V):
                    pass

    run(main())


def test_wrong_server_key_fails_handshake():
    async def main():
        async with FakeControl() as fc:
            with pytest.raises(ControlTransportError):
                async with ControlConn.dial(
                    fc.url, MachinePrivate.generate(), MachinePrivate.generate().public(), V, timeout=3
                ):
                    pass

    run(main())


def test_bad_record_kills_connection_with_clear_reason():
    async def main():
        async with FakeControl("bad_record") as fc:
            async with ControlConn.dial(fc.url, MachinePrivate.generate(), fc.key.public(), V) as conn:
                await conn.wait_early_payload()
                await asyncio.wait_for(conn.wait_closed(), 5)
                assert conn.closed_reason == "noise: record decryption failed"
                with pytest.raises(ControlTransportError, match="record decryption failed"):
                    await conn.request("POST", "/machine/register", b"{}")

    run(main())


def _client(fc, events, **kw):
    opts = ControlOptions(
        server_url=fc.url,
        machine_key=MachinePrivate.generate(),
        node_key=NodePrivate.generate(),
        disco_public=DiscoPrivate.generate().public(),
        hostinfo=Hostinfo(hostname="me"),
        auth_key="tskey-test",
        backoff_base=0.05,
        backoff_cap=0.2,
        **kw,
    )
    return ControlClient(opts, on_event=events.append)


async def _until(pred, timeout=10):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def test_client_register_map_deltas_watchdog_and_reconnect():
    async def main():
        async with FakeControl() as fc:
            events = []
            c = _client(fc, events, watchdog_timeout=0.5)
            task = asyncio.ensure_future(c.run())
            try:
                fc.map_messages.put_nowait({"Node": SELF, "Peers": [{"ID": 2, "Key": "nodekey:" + "02" * 32}]})
                fc.map_messages.put_nowait({"KeepAlive": True})
                fc.map_messages.put_nowait({"PeersRemoved": [2]})
                await _until(lambda: c.netmap is not None and not c.netmap.peers)
                reg = next(b for p, b in fc.requests if p == "/machine/register")
                assert reg["Auth"] == {"AuthKey": "tskey-test"} and reg["Version"] == V
                mreq = next(b for p, b in fc.requests if p == "/machine/map")
                assert (
                    mreq["Stream"] is True and mreq["Compress"] == "zstd" and mreq["DiscoKey"].startswith("discokey:")
                )
                assert c.status.state is State.SYNCED and c.status.in_map_poll
                # the server goes silent: the watchdog restarts the stream
                await _until(lambda: c.status.last_error and "watchdog" in c.status.last_error)
                assert not c.status.in_map_poll
                fc.map_messages.put_nowait({"Node": SELF})
                await _until(lambda: fc.map_streams >= 2 and c.status.in_map_poll)
                assert sum(isinstance(e, NetMapUpdated) for e in events) >= 3
                # endpoint change while streaming -> lite update (Stream:false, OmitPeers:true)
                c.set_endpoints(["192.0.2.5:41641"])
                await _until(lambda: any(p == "/machine/map" and not b.get("Stream") for p, b in fc.requests))
                lite = [b for p, b in fc.requests if p == "/machine/map" and not b.get("Stream")][-1]
                assert lite["OmitPeers"] is True and lite["Endpoints"] == ["192.0.2.5:41641"]
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main(), timeout=30)


def test_client_interactive_followup_and_new_url():
    async def main():
        async with FakeControl() as fc:
            fc.register_responses = [
                {"AuthURL": "http://x/register/one"},
                {"AuthURL": "http://x/register/two"},  # the followup got a new URL (cache expired)
                {"MachineAuthorized": True},
            ]
            events = []
            c = _client(fc, events)
            c.opts.auth_key = None
            task = asyncio.ensure_future(c.run())
            try:
                fc.map_messages.put_nowait({"Node": SELF})
                await _until(lambda: c.status.state is State.SYNCED)
                urls = [e.url for e in events if type(e).__name__ == "AuthURL"]
                assert urls == ["http://x/register/one", "http://x/register/two"]
                regs = [b for p, b in fc.requests if p == "/machine/register"]
                assert [r.get("Followup") for r in regs] == [None, "http://x/register/one", "http://x/register/two"]
                assert all("Auth" not in r for r in regs)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main())


def test_client_login_error_surfaces_and_waits():
    async def main():
        async with FakeControl() as fc:
            fc.register_responses = [{"Error": "invalid pre auth key"}]
            events = []
            c = _client(fc, events)
            task = asyncio.ensure_future(c.run())
            try:
                await _until(lambda: c.status.state is State.NEEDS_LOGIN)
                assert c.status.last_error == "login: invalid pre auth key"
                await asyncio.sleep(0.3)
                assert len([p for p, _ in fc.requests if p == "/machine/register"]) == 1  # no hammering
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main())


def test_control_unreachable_status():
    async def main():
        async with FakeControl() as fc:
            url = fc.url
        events = []
        opts = ControlOptions(
            server_url=url,
            machine_key=MachinePrivate.generate(),
            node_key=NodePrivate.generate(),
            disco_public=DiscoPrivate.generate().public(),
            hostinfo=Hostinfo(hostname="me"),
            backoff_base=0.05,
            backoff_cap=0.1,
            dial_timeout=1,
        )
        c = ControlClient(opts, on_event=events.append)
        task = asyncio.ensure_future(c.run())
        try:
            await _until(lambda: c.status.reconnects >= 3)
            assert not c.status.in_map_poll and "dial 127.0.0.1" in c.status.last_error
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main())
