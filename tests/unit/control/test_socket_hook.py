"""ControlOptions.socket_hook sees each control TCP socket pre-connect: GET /key and the /ts2021 dial, IPv4 + IPv6."""

import asyncio
import socket

import pytest

from engine.control.client import ControlClient, ControlOptions, State
from engine.control.transport import ControlTransportError, fetch_server_key
from engine.tailcfg import CURRENT_CAPABILITY_VERSION, Hostinfo
from engine.types.keys import DiscoPrivate, MachinePrivate, NodePrivate
from tests.unit.control.fakecontrol import FakeControl

SELF = {"ID": 1, "Name": "me.t.", "Key": "nodekey:" + "01" * 32, "Addresses": ["100.64.0.1/32"]}


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"))],
)
def test_hook_called_for_key_fetch_and_ts2021_dial(host):
    async def main():
        hooked: list[tuple[int, int, bool]] = []  # (family, local port, connected at hook time)

        def hook(sock: socket.socket) -> None:
            # binding here is the kind of thing a hook does (SO_MARK in the daemon); it also
            # tells us which server-side connection this socket became
            sock.bind((host, 0))
            try:
                sock.getpeername()
                connected = True
            except OSError:
                connected = False
            hooked.append((sock.family, sock.getsockname()[1], connected))

        async with FakeControl(host=host) as fc:
            opts = ControlOptions(
                server_url=fc.url,
                machine_key=MachinePrivate.generate(),
                node_key=NodePrivate.generate(),
                disco_public=DiscoPrivate.generate().public(),
                hostinfo=Hostinfo(hostname="me"),
                auth_key="tskey-test",
                socket_hook=hook,
            )
            c = ControlClient(opts)
            task = asyncio.ensure_future(c.run())
            try:
                fc.map_messages.put_nowait({"Node": SELF})
                while c.status.state is not State.SYNCED:
                    await asyncio.sleep(0.02)
            finally:
                await c.aclose()
                await task
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        assert hooked and all(f == fam and not connected for f, _, connected in hooked), hooked
        lines = {port: line for port, line in fc.connections}
        seen = [lines.get(port, "") for _, port, _ in hooked]
        assert any(line.startswith("GET /key") for line in seen), (seen, fc.connections)
        assert any(line.startswith("POST /ts2021") for line in seen), (seen, fc.connections)
        assert len(hooked) == len(fc.connections)  # no control socket escaped the hook

    asyncio.run(asyncio.wait_for(main(), 20))


def test_hook_errors_fail_the_dial_cleanly():
    async def main():
        def hook(sock: socket.socket) -> None:
            raise PermissionError("no CAP_NET_ADMIN")

        async with FakeControl() as fc:
            with pytest.raises(ControlTransportError, match="no CAP_NET_ADMIN"):
                await fetch_server_key(fc.url, CURRENT_CAPABILITY_VERSION, timeout=3, socket_hook=hook)
            assert fc.connections == []

    asyncio.run(asyncio.wait_for(main(), 10))
