"""PyInstaller entry script for `meshgui` (calls meshgui.app:main)."""

import sys

from meshgui.app import main

if __name__ == "__main__":
    sys.exit(main())
