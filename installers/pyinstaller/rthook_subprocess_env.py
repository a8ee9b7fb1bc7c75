"""Runtime hook: programs we start (ip, nft, ping, systemctl, browser) see the caller's library path, not the bundle's.

The PyInstaller bootloader prepends the bundle's _internal/ to LD_LIBRARY_PATH (keeping the
original in LD_LIBRARY_PATH_ORIG). The dynamic loader has read it already at process start, so
restoring it here changes nothing for this process and keeps bundled libraries out of children.
"""

import os


def _restore_library_path() -> None:
    orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig:
        os.environ["LD_LIBRARY_PATH"] = orig
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


_restore_library_path()
del _restore_library_path
