"""Lab driver: run engine.daemon.Node like `mesh-helper`, and call its Python API from JSON lines on stdin.

    stdin:  {"n": 1, "method": "set_exit_node", "args": ["py-e"], "kwargs": {"allow_lan": true}}
    stdout: RESULT 1 {"exit_node": "py-e", ...}      (the prefs after the call, or {"error": "..."})

This is how the LocalAPI calls the node at run time; the test drives it without a LocalAPI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from engine import authkey
from engine.daemon import Node, build_parser, load_state


def main(argv: list[str]) -> int:
    faulthandler.register(signal.SIGUSR1)  # stack dump on demand (debugging hung stops)
    args = build_parser().parse_args(argv)
    args.auth_key = authkey.resolve(args.auth_key, warn=sys.stderr) or os.environ.get("MESH_AUTH_KEY") or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("hpack", "h2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("mesh-helper")
    old = os.umask(0o077)
    state = load_state(Path(args.state), log)
    os.umask(old)
    node = Node(args, state, Path(args.state), log)

    def call(req: dict) -> None:
        try:
            prefs = getattr(node, req["method"])(*req.get("args", ()), **req.get("kwargs", {}))
            res = dataclasses.asdict(prefs) if dataclasses.is_dataclass(prefs) else {"value": repr(prefs)}
        except Exception as e:  # noqa: BLE001 - reported to the test
            res = {"error": f"{type(e).__name__}: {e}"}
        print(f"RESULT {req['n']} {json.dumps(res)}", flush=True)

    async def amain() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reader() -> None:
            for line in sys.stdin:
                if line.strip():
                    loop.call_soon_threadsafe(call, json.loads(line))

        threading.Thread(target=reader, daemon=True).start()
        return await node.run(stop)

    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
