"""A fake helper process (FakeLocalAPI served until SIGTERM), so the supervisor can start, lose and restart it."""

from __future__ import annotations

import argparse
import signal
import threading

from tests.gui.builders import exit_option, named, peer
from tests.gui.fake_localapi import FakeLocalAPI


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--socket", required=True)
    p.add_argument("--backend", default="Stopped")
    args = p.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    peers = [peer(1, named("nas"), exit_option), peer(2, named("phone"))]
    with FakeLocalAPI(args.socket, backend=args.backend, peers=peers):
        done.wait()


if __name__ == "__main__":
    main()
