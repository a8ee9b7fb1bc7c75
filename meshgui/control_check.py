"""Validation of a custom control URL: scheme, host, reachable, answers GET /key?v=N like a Tailscale control server.

Blocking (urllib); the GUI runs it in an executor thread, never on the GUI thread.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

# tailcfg.CurrentCapabilityVersion we announce when probing (any recent value works for /key).
PROBE_CAPABILITY_VERSION = 130
TIMEOUT = 8.0  # seconds


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    url: str = ""  # normalised URL (no trailing slash) when ok


def normalise(url: str) -> str:
    return url.strip().rstrip("/")


def check_syntax(url: str) -> CheckResult:
    url = normalise(url)
    if not url:
        return CheckResult(False, "Enter the address of your control server, e.g. https://headscale.example.com")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return CheckResult(False, "The address must start with https:// (or http:// for a test server).")
    if not parts.hostname:
        return CheckResult(False, "The address has no host name.")
    if parts.query or parts.fragment:
        return CheckResult(False, "The address must not contain ?query or #fragment parts.")
    try:
        parts.port
    except ValueError:
        return CheckResult(False, "The port number in the address is not valid.")
    return CheckResult(True, "", url)


def check_control_url(url: str, *, timeout: float = TIMEOUT) -> CheckResult:
    """Full check; returns a plain-words message when the server is not usable."""
    syntax = check_syntax(url)
    if not syntax.ok:
        return syntax
    url = syntax.url
    probe = f"{url}/key?v={PROBE_CAPABILITY_VERSION}"
    req = urllib.request.Request(probe, headers={"User-Agent": "meshgui"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
            body = resp.read(65536)
    except urllib.error.HTTPError as e:
        return CheckResult(
            False, f"The server answered HTTP {e.code}: it does not look like a Tailscale or Headscale control server."
        )
    except urllib.error.URLError as e:
        reason = getattr(e, "reason", e)
        return CheckResult(False, f"Could not reach {urllib.parse.urlsplit(url).netloc}: {reason}.")
    except (OSError, ValueError) as e:
        return CheckResult(False, f"Could not reach the server: {e}.")
    try:
        obj = json.loads(body)
    except ValueError:
        return CheckResult(False, "The server answered, but not like a control server (no key in its answer).")
    key = obj.get("publicKey") or obj.get("legacyPublicKey") if isinstance(obj, dict) else None
    if not isinstance(key, str) or not key.startswith("mkey:"):
        return CheckResult(False, "The server answered, but not like a control server (no key in its answer).")
    return CheckResult(True, f"{urllib.parse.urlsplit(url).netloc} is a control server.", url)
