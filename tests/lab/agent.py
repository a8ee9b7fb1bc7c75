"""The JSON-lines command loop of a lab agent: a script a test starts inside a lab host and drives over stdin/stdout.

The agent prints one hello line, then answers every command line with one reply line::

    async def run():
        ...
        await serve({"ready": True, "node": ...}, {"status": status, "peers": set_peers})

A command line is ``{"cmd": NAME, ...}``; ``commands[NAME](request)`` (a plain or a coroutine function) gives
the reply object, None meaning ``{"ok": true}``. ``{"cmd": "quit"}`` is answered ``{"ok": true}`` and ends the
loop, as does EOF; an unknown NAME is answered ``{"ok": false, "error": "unknown command NAME"}``.
The test side reads these lines (tests/nat/natlab.py: Agent).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from typing import Any, Callable


def _write(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(hello: dict, commands: dict[str, Callable[[dict], Any]]) -> None:
    """Print ``hello``, then answer the command lines on stdin until ``quit`` or EOF (see the module doc)."""
    _write(hello)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        req = json.loads(line)
        name = req["cmd"]
        if name == "quit":
            _write({"ok": True})
            return
        handler = commands.get(name)
        if handler is None:
            reply = {"ok": False, "error": f"unknown command {name}"}
        else:
            reply = handler(req)
            if inspect.isawaitable(reply):
                reply = await reply
        _write({"ok": True} if reply is None else reply)


__all__ = ["serve"]
