"""Async LocalAPI access for the GUI (no Qt): wraps engine.localapi.client and hands the reducer tailscaled-shaped dicts.

The GUI's reducer works on the Go-shaped JSON (ipnstate.Status, ipn.Prefs, ipn.Notify as
dicts), so the typed objects of `engine.localapi.schema` are turned back into their wire
dicts here. Errors are narrowed to three kinds the bridge acts on: HelperUnavailable
(reconnect with backoff, show "helper not running"), AccessDenied (read-only) and
LocalAPIError (show the message); set_keys adds UntrustedHelper: private keys go only to a
helper whose socket is owned and served by root (`trusted_helper_uids`, checked on the very
connection before the keys are written). Framing of the watch stream (newline-delimited JSON with a
maximum line length) is the client's job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Mapping

import h11

from engine.localapi import client as lc
from engine.localapi.schema import MaskedPrefs, Options, SchemaError

# ipn.NotifyWatchOpt bits (ipn/backend.go) understood by tailscaled 1.90 and our helper.
WATCH_ENGINE_UPDATES = 1 << 0
WATCH_INITIAL_STATE = 1 << 1
WATCH_INITIAL_PREFS = 1 << 2
WATCH_INITIAL_NETMAP = 1 << 3
WATCH_NO_PRIVATE_KEYS = 1 << 4
WATCH_INITIAL_HEALTH = 1 << 7
WATCH_RATE_LIMIT = 1 << 8
GUI_WATCH_MASK = (WATCH_ENGINE_UPDATES | WATCH_INITIAL_STATE | WATCH_INITIAL_PREFS
                  | WATCH_INITIAL_NETMAP | WATCH_NO_PRIVATE_KEYS | WATCH_RATE_LIMIT)
# The GUI's keys' owner watches without NoPrivateKeys (tailscaled allows that to writers only) so that
# the helper can hand it a node key the control server rotated (meshvpn's Notify extension).
GUI_OWNER_WATCH_MASK = GUI_WATCH_MASK & ~WATCH_NO_PRIVATE_KEYS
NODE_KEY_ROTATED = "MeshvpnNodeKeyRotated"  # {"NodePublic", "OldNodePublic", "NodeKey" (owner only)}
REQUEST_TIMEOUT = 30.0  # seconds, for one-shot requests (not the watch stream)
KEYS_PATH = "/localapi/v0/meshvpn/keys"
DEFAULT_SOCKET = lc.DEFAULT_SOCKET
ROOT_ONLY = lc.ROOT_ONLY  # the helper uids trusted with keys in production


def default_socket() -> str:
    """$MESHVPN_SOCKET or /run/meshvpn/meshvpn.sock (the helper's and meshctl's default)."""
    return lc.default_socket()


class LocalAPIError(Exception):
    """The LocalAPI answered with an unexpected HTTP status."""

    def __init__(self, status: int, body: str, path: str) -> None:
        super().__init__(f"{path}: HTTP {status}: {body.strip()[:200]}")
        self.status = status
        self.body = body
        self.path = path


class AccessDenied(LocalAPIError):
    """HTTP 403: this user may read but not control the helper."""


class HelperUnavailable(Exception):
    """The helper's socket could not be reached."""


class UntrustedHelper(Exception):
    """Keys were not handed over: the socket is not owned and served by root (plain-words message)."""


class EngineClient:
    """The LocalAPI calls the GUI makes, as dicts in tailscaled's JSON shapes."""

    def __init__(self, socket_path: str, *, timeout: float = REQUEST_TIMEOUT,
                 trusted_helper_uids: frozenset[int] = ROOT_ONLY) -> None:
        """`trusted_helper_uids`: who may receive keys; only root unless a test passes its own uid explicitly."""
        self.socket_path = socket_path
        self.timeout = timeout
        self.trusted_helper_uids = frozenset(trusted_helper_uids)
        self._c = lc.LocalClient(socket_path, timeout=timeout)

    async def status(self) -> dict[str, Any]:
        async with _mapped("/localapi/v0/status"):
            return (await self._c.status()).to_dict()

    async def get_prefs(self) -> dict[str, Any]:
        async with _mapped("/localapi/v0/prefs"):
            return (await self._c.prefs()).to_dict()

    async def edit_prefs(self, masked: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH ipn.MaskedPrefs: each changed field needs its `<Field>Set: true` companion."""
        async with _mapped("/localapi/v0/prefs"):
            return (await self._c.edit_prefs(MaskedPrefs.from_dict(dict(masked)))).to_dict()

    async def start(self, options: Mapping[str, Any] | None = None) -> None:
        async with _mapped("/localapi/v0/start"):
            await self._c.start(Options.from_dict(dict(options or {})))

    async def login_interactive(self) -> None:
        async with _mapped("/localapi/v0/login-interactive"):
            await self._c.login_interactive()

    async def logout(self) -> None:
        async with _mapped("/localapi/v0/logout"):
            await self._c.logout()

    async def ping(self, ip: str, ping_type: str = "disco") -> dict[str, Any]:
        async with _mapped("/localapi/v0/ping"):
            return (await self._c.ping(ip, ping_type)).to_dict()

    async def set_keys(self, payload: Mapping[str, str]) -> dict[str, Any]:
        """Hand keys to the helper (only a trusted one: UntrustedHelper); answers the public halves. Never logged."""
        try:
            async with _mapped(KEYS_PATH):
                info = await self._c.set_keys(payload["MachineKey"], payload["NodeKey"],
                                              trusted_uids=self.trusted_helper_uids)
        except _Untrusted as e:
            raise UntrustedHelper(f"meshvpn did not give this device's keys to {self.socket_path}: {e.args[0]}. "
                                  "Another program may be posing as the VPN helper; the real helper runs as "
                                  "root.") from None
        return info.to_dict()

    async def watch(self, mask: int = GUI_WATCH_MASK) -> AsyncIterator[dict[str, Any]]:
        """Yield ipn.Notify dicts (fields absent from the message are left out) until the stream ends."""
        path = "/localapi/v0/watch-ipn-bus"
        async with _mapped(path):
            async for n in self._c.watch_ipn_bus(mask):
                yield {k: v for k, v in n.to_dict().items() if v is not None}


class _Untrusted(Exception):
    """lc.UntrustedHelper, carried through _mapped (args[0]: the client's message)."""


@contextlib.asynccontextmanager
async def _mapped(path: str):
    """Translate the client's errors into the three kinds the bridge handles."""
    try:
        yield
    except lc.UntrustedHelper as e:
        raise _Untrusted(e.message) from None
    except lc.AccessDenied as e:
        raise AccessDenied(403, e.message, path) from None
    except lc.HelperNotRunning as e:
        raise HelperUnavailable(str(e)) from None
    except lc.LocalAPIError as e:
        if e.status == 0:  # closed without answer, malformed HTTP, invalid JSON, overlong bus line
            raise HelperUnavailable(f"{path}: {e.message}") from None
        raise LocalAPIError(e.status, e.message, path) from None
    except (SchemaError, h11.ProtocolError) as e:
        raise HelperUnavailable(f"{path}: malformed answer from the helper: {e}") from None
    except (asyncio.TimeoutError, OSError) as e:
        raise HelperUnavailable(f"{path}: {type(e).__name__}: {e}") from None
