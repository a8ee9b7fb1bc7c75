"""Async LocalAPI access for the GUI (no Qt): engine.localapi.client, decoding leniently into engine.localapi.schema.

The wire is read once, by the schema types themselves: every answer and every ipn.Notify comes
back as a `Decoded` (the schema object plus the FieldProblems found in it), decoded leniently
(schema.lenient_decoding), so one odd or missing field gets its default and never costs the rest
of the message. Errors are narrowed to three kinds the bridge acts on: HelperUnavailable
(reconnect with backoff, show "helper not running"; also for text that is not JSON at all),
AccessDenied (read-only) and LocalAPIError (show the message); set_keys adds UntrustedHelper:
private keys go only to a helper whose socket is owned and served by root (`trusted_helper_uids`,
checked on the very connection before the keys are written). Framing of the watch stream
(newline-delimited JSON with a maximum line length) is the client's job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Awaitable, Mapping, TypeVar

import h11

from engine.localapi import client as lc, schema
from engine.localapi.schema import Decoded, SchemaError

# What the tray watches on the IPN bus (ipn.NotifyWatchOpt).
_W = schema.NotifyWatchOpt
GUI_WATCH_MASK = (
    _W.ENGINE_UPDATES | _W.INITIAL_STATE | _W.INITIAL_PREFS | _W.INITIAL_NETMAP | _W.NO_PRIVATE_KEYS | _W.RATE_LIMIT
)
# The GUI's keys' owner watches without NoPrivateKeys (tailscaled allows that to writers only) so that
# the helper can hand it a node key the control server rotated (Notify.node_key_rotated, meshvpn's extension).
GUI_OWNER_WATCH_MASK = GUI_WATCH_MASK & ~_W.NO_PRIVATE_KEYS
REQUEST_TIMEOUT = 30.0  # seconds, for one-shot requests (not the watch stream)
KEYS_PATH = "/localapi/v0/meshvpn/keys"
DEFAULT_SOCKET = lc.DEFAULT_SOCKET
ROOT_ONLY = lc.ROOT_ONLY  # the helper uids trusted with keys in production

T = TypeVar("T")


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
    """The LocalAPI calls the GUI makes, answering leniently decoded schema objects."""

    def __init__(
        self, socket_path: str, *, timeout: float = REQUEST_TIMEOUT, trusted_helper_uids: frozenset[int] = ROOT_ONLY
    ) -> None:
        """`trusted_helper_uids`: who may receive keys; only root unless a test passes its own uid explicitly."""
        self.socket_path = socket_path
        self.timeout = timeout
        self.trusted_helper_uids = frozenset(trusted_helper_uids)
        self._c = lc.LocalClient(socket_path, timeout=timeout)

    async def status(self) -> Decoded[schema.Status]:
        async with _mapped("/localapi/v0/status"):
            return await _lenient(self._c.status())

    async def get_prefs(self) -> Decoded[schema.Prefs]:
        async with _mapped("/localapi/v0/prefs"):
            return await _lenient(self._c.prefs())

    async def edit_prefs(self, masked: schema.MaskedPrefs) -> Decoded[schema.Prefs]:
        """PATCH ipn.MaskedPrefs (`MaskedPrefs.of(want_running=True)`); answers the prefs after the edit."""
        async with _mapped("/localapi/v0/prefs"):
            return await _lenient(self._c.edit_prefs(masked))

    async def start(self, options: schema.Options | None = None) -> None:
        async with _mapped("/localapi/v0/start"):
            await self._c.start(options or schema.Options())

    async def login_interactive(self) -> None:
        async with _mapped("/localapi/v0/login-interactive"):
            await self._c.login_interactive()

    async def logout(self) -> None:
        async with _mapped("/localapi/v0/logout"):
            await self._c.logout()

    async def ping(self, ip: str, ping_type: str = "disco") -> Decoded[schema.PingResult]:
        async with _mapped("/localapi/v0/ping"):
            return await _lenient(self._c.ping(ip, ping_type))

    async def set_keys(self, payload: Mapping[str, str]) -> schema.KeysInfo:
        """Hand keys to the helper (only a trusted one: UntrustedHelper); answers the public halves. Never logged."""
        try:
            async with _mapped(KEYS_PATH):
                info = await _lenient(
                    self._c.set_keys(payload["MachineKey"], payload["NodeKey"], trusted_uids=self.trusted_helper_uids)
                )
        except _Untrusted as e:
            raise UntrustedHelper(
                f"meshvpn did not give this device's keys to {self.socket_path}: {e.args[0]}. "
                "Another program may be posing as the VPN helper; the real helper runs as "
                "root."
            ) from None
        return info.value

    async def watch(self, mask: int = GUI_WATCH_MASK) -> AsyncIterator[Decoded[schema.Notify]]:
        """Yield each ipn.Notify (fields absent from the message are None) until the stream ends."""
        async with _mapped("/localapi/v0/watch-ipn-bus"):
            stream = self._c.watch_ipn_bus(mask)
            try:
                while True:
                    try:
                        notify = await _lenient(anext(stream))
                    except StopAsyncIteration:
                        return
                    yield notify
            finally:
                await stream.aclose()


async def _lenient(answer: Awaitable[T]) -> Decoded[T]:
    """Await a client call whose schema decoding runs leniently; its value with the problems found."""
    with schema.lenient_decoding() as problems:
        value = await answer
    return Decoded(value, tuple(problems))


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
