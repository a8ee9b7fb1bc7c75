"""PyInstaller entry script for `mesh-helper` (calls engine.cli.helper:main)."""

import sys

from engine.cli.helper import main

if __name__ == "__main__":
    sys.exit(main())
