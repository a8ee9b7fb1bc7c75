"""PyInstaller entry script for `meshctl` (calls engine.cli.meshctl:main)."""

import sys

from engine.cli.meshctl import main

if __name__ == "__main__":
    sys.exit(main())
