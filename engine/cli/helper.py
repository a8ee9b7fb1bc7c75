"""mesh-helper entry point: dispatches to the standalone WireGuard mode, the LocalAPI service or the headless node."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "wg":
        from engine.dataplane.cli import main as wg_main

        return wg_main(args[1:])
    if args and args[0] == "serve":
        from engine.service import main as service_main

        return service_main(args[1:])
    from engine.daemon import main as daemon_main

    return daemon_main(args)


if __name__ == "__main__":
    sys.exit(main())
