"""Checks on DNS names and addresses from the control server before they reach resolv.conf or resolvectl arguments."""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any, Iterable

MAX_NAME_LEN = 253  # RFC 1035 §3.1: 255 octets on the wire = 253 characters without the root dot
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII | re.IGNORECASE)

_log = logging.getLogger("meshvpn.dns.names")


def check_domain(name: Any) -> str:
    """`name` as "label.label" (lower case, no trailing dot), or ValueError saying why it is not a DNS name.

    Labels: 1-63 of letters, digits, '_' and '-', not starting or ending with '-' (so never an
    option to resolvectl); no spaces, control characters or other punctuation; one trailing
    dot allowed; the root alone is refused.
    """
    if not isinstance(name, str):
        raise ValueError(f"not a string: {type(name).__name__}")
    n = name[:-1] if name.endswith(".") else name
    if not n:
        raise ValueError("empty name")
    if len(n) > MAX_NAME_LEN:
        raise ValueError(f"longer than {MAX_NAME_LEN} characters")
    for label in n.split("."):
        if not label:
            raise ValueError("empty label")
        if len(label) > 63:
            raise ValueError("label longer than 63 characters")
        if not _LABEL.fullmatch(label):
            raise ValueError(f"bad label {label!r}")
    return n.lower()


def is_valid_domain(name: Any) -> bool:
    try:
        check_domain(name)
    except ValueError:
        return False
    return True


def valid_domains(
    names: Iterable[Any], what: str = "search domain", logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
) -> list[str]:
    """The valid ones of `names`, normalised (see check_domain), in order, without duplicates; each bad one logged."""
    out: list[str] = []
    if isinstance(names, (str, bytes)):
        names = [names]
    for name in names or ():
        try:
            n = check_domain(name)
        except ValueError as e:
            (logger or _log).warning("ignoring invalid %s %r: %s", what, name, e)
            continue
        if n not in out:
            out.append(n)
    return out


def ip_literals(values: Iterable[Any], logger: logging.Logger | logging.LoggerAdapter[Any] | None = None) -> list[str]:
    """The values that are IP addresses, normalised, in order; each other one logged and left out."""
    out: list[str] = []
    for v in values or ():
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            (logger or _log).warning("ignoring invalid nameserver %r", v)
    return out
