"""`python -m meshgui`: same as the `meshgui` console script."""

import sys

from meshgui.app import main

sys.exit(main())
