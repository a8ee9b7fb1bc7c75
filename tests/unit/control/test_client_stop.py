"""ControlClient stops promptly: aclose() or cancel while logging in, or while a map-poll TaskGroup child fails.

Python 3.11 turns a cancellation that meets a failing TaskGroup child into an ExceptionGroup
(the cancellation is lost); the client used to catch that group and reconnect forever.
"""

import asyncio

import pytest

from engine.control.client import ControlClient, ControlOptions, State
from engine.tailcfg import Hostinfo
from engine.types.keys import DiscoPrivate, MachinePrivate, NodePrivate
from tests.unit.control.fakecontrol import FakeControl

SELF = {"ID": 1, "Name": "me.t.", "Key": "nodekey:" + "01" * 32, "Addresses": ["100.64.0.1/32"]}
STOP_DEADLINE = 1.0  # s


def _client(fc: FakeControl, auth_key: str | None = "tskey-test") -> ControlClient:
    opts = ControlOptions(
        server_url=fc.url,
        machine_key=MachinePrivate.generate(),
        node_key=NodePrivate.generate(),
        disco_public=DiscoPrivate.generate().public(),
        hostinfo=Hostinfo(hostname="me"),
        auth_key=auth_key,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    return ControlClient(opts)


async def _until(pred, timeout=10):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def _stop(c: ControlClient, task: asyncio.Task, how: str) -> None:
    """Stop the client ``how`` ("aclose" or "cancel") and require run() to end within STOP_DEADLINE."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if how == "aclose":
        await asyncio.wait({loop.create_task(c.aclose())}, timeout=STOP_DEADLINE)
    else:
        task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_DEADLINE - (loop.time() - t0))
    if not done:
        for _ in range(10):  # don't leak a running client into the next test
            task.cancel()
            if (await asyncio.wait({task}, timeout=0.5))[0]:
                break
        pytest.fail(f"run() still running {STOP_DEADLINE}s after {how}")
    if how == "aclose":
        assert task.result() is None
    else:
        assert task.cancelled()


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_stop_during_login(how):
    async def main():
        async with FakeControl("hang_register") as fc:
            c = _client(fc)
            task = asyncio.ensure_future(c.run())
            await _until(lambda: any(p == "/machine/register" for p, _ in fc.requests) or len(fc.connections) >= 2)
            await asyncio.sleep(0.1)
            assert c.status.state is State.LOGGING_IN
            await _stop(c, task, how)

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_stop_during_interactive_login(how):
    async def main():
        async with FakeControl() as fc:
            fc.register_responses = [{"AuthURL": "http://x/register/one"}] + [{"AuthURL": "http://x/register/one"}] * 50
            c = _client(fc, auth_key=None)
            task = asyncio.ensure_future(c.run())
            await _until(lambda: c.status.state is State.WAIT_AUTH_URL)
            await _stop(c, task, how)

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("how", ["aclose", "cancel"])
def test_stop_while_a_map_poll_child_fails(how):
    """login() makes the map poll's interrupt child raise in the same loop turn as the stop.

    With cancel, the TaskGroup gets the parent's cancellation and the child's failure together
    and (3.11) raises only the ExceptionGroup: the cancellation is gone.
    """

    async def main():
        async with FakeControl() as fc:
            c = _client(fc)
            task = asyncio.ensure_future(c.run())
            fc.map_messages.put_nowait({"Node": SELF})
            await _until(lambda: c.status.state is State.SYNCED and c.status.in_map_poll)
            c.login()  # interrupt(): raises _Interrupted inside the map poll's TaskGroup
            await _stop(c, task, how)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_stop_during_backoff_and_when_paused():
    async def main():
        async with FakeControl() as fc:
            url = fc.url
        c = ControlClient(
            ControlOptions(
                server_url=url,
                machine_key=MachinePrivate.generate(),
                node_key=NodePrivate.generate(),
                disco_public=DiscoPrivate.generate().public(),
                hostinfo=Hostinfo(hostname="me"),
                backoff_base=30,
                backoff_cap=30,
            )
        )
        task = asyncio.ensure_future(c.run())
        await _until(lambda: c.status.reconnects >= 1)
        await _stop(c, task, "aclose")
        async with FakeControl() as fc:
            fc.register_responses = [{"Error": "invalid pre auth key"}]
            c = _client(fc)
            task = asyncio.ensure_future(c.run())
            await _until(lambda: c.status.state is State.NEEDS_LOGIN)
            await _stop(c, task, "aclose")

    asyncio.run(asyncio.wait_for(main(), 20))


def test_aclose_before_run_and_twice():
    async def main():
        async with FakeControl() as fc:
            c = _client(fc)
            await c.aclose()
            await asyncio.wait_for(c.run(), STOP_DEADLINE)  # returns at once
            await c.aclose()

    asyncio.run(asyncio.wait_for(main(), 10))
