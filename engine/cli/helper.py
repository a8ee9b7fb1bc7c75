"""mesh-helper entry point: `serve` (the LocalAPI daemon) or `wg` (standalone WireGuard); nothing else."""

from __future__ import annotations

import sys

USAGE = """\
usage: mesh-helper serve [--state FILE | --prefs FILE] [--socket PATH] [--tun NAME] ...
       mesh-helper wg --config FILE | --userspace IFACE

The headless mode `mesh-helper --login-server URL --auth-key KEY --state FILE` was removed.
Run the helper as a daemon and bring it up with meshctl instead:

    mesh-helper serve --state FILE
    meshctl up --login-server URL --auth-key file:PATH [--hostname NAME] [--exit-node IP|NAME]
               [--advertise-exit-node] [--advertise-routes CIDRs] [--accept-routes] [--shields-up] ...

(`mesh-helper serve --help`, `meshctl up --help` list every flag.)
"""
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "wg":
        from engine.dataplane.cli import main as wg_main

        return wg_main(args[1:])
    if args and args[0] == "serve":
        from engine.service import main as service_main

        return service_main(args[1:])
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(USAGE)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
