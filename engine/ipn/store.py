"""Where the backend keeps prefs (and, in headless mode only, the node's keys) between runs.

- MemoryStore: nothing survives a restart (GUI mode: the GUI re-sends keys and edits).
- FileStore: one JSON file, written atomically (tmp + fsync + rename) with mode 0600, refused if
  it is group/world-accessible or not owned by us. With `keep_keys=True` (`mesh-helper serve
  --state FILE`, headless) the private keys are stored too; otherwise only prefs.

File layout: {"Prefs": <ipn.Prefs JSON>, "Keys": {"MachinePrivate": "privkey:…", "NodePrivate": "privkey:…"}}
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.fs.atomicfile import write_atomic
from engine.ipn.engine_api import NodeKeys
from engine.localapi.schema import Prefs, SchemaError
from engine.types.keys import MachinePrivate, NodePrivate


class StoreError(RuntimeError):
    """The state file cannot be used (bad permissions, corrupt)."""


@dataclass
class Stored:
    prefs: Prefs | None = None
    keys: NodeKeys | None = None


class PrefsStore(Protocol):
    def load(self) -> Stored: ...

    def save(self, prefs: Prefs, keys: NodeKeys | None) -> None: ...


class MemoryStore:
    """Keeps the last saved state in memory only."""

    def __init__(self, initial: Stored | None = None) -> None:
        self._st = initial or Stored()

    def load(self) -> Stored:
        return Stored(self._st.prefs, self._st.keys)

    def save(self, prefs: Prefs, keys: NodeKeys | None) -> None:
        self._st = Stored(prefs, keys)


class FileStore:
    """A root-only JSON state file."""

    def __init__(self, path: str | os.PathLike[str], *, keep_keys: bool) -> None:
        self.path = Path(path)
        self.keep_keys = keep_keys

    def load(self) -> Stored:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return Stored()
        except OSError as e:
            raise StoreError(f"cannot open state file {self.path}: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid():
                raise StoreError(f"state file {self.path} is owned by uid {st.st_uid}, not by us")
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise StoreError(
                    f"state file {self.path} is accessible by other users "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
                )
            raw = f.read(4 << 20)
        try:
            d = json.loads(raw)
            prefs = Prefs.from_dict(d["Prefs"]) if d.get("Prefs") is not None else None
            keys = None
            k = d.get("Keys")
            if self.keep_keys and k:
                keys = NodeKeys(
                    MachinePrivate.from_text(k["MachinePrivate"]),
                    NodePrivate.from_text(k["NodePrivate"]),
                    source="state-file",
                )
        except (ValueError, KeyError, TypeError, SchemaError) as e:
            raise StoreError(f"state file {self.path} is corrupt: {type(e).__name__}") from e
        return Stored(prefs, keys)

    def save(self, prefs: Prefs, keys: NodeKeys | None) -> None:
        d: dict = {"Prefs": prefs.to_dict()}
        if self.keep_keys and keys is not None:
            d["Keys"] = {"MachinePrivate": keys.machine.to_text(), "NodePrivate": keys.node.to_text()}
        data = json.dumps(d, indent=1).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.path, data, mode=0o600)
