"""Who is calling: peer credentials of a Unix-socket connection and what they may do.

Policy (tailscaled's ipnauth on Linux, made explicit):
- uid 0 (root): read + write.
- the operator: a user (`--operator alice`, or the OperatorUser pref set by root) or a group
  (`--operator :netdev`, membership by primary or supplementary group): read + write.
- everyone else: read only (status, prefs, watch, whois, ping); writes get 403 with a message
  saying who may do it.
- private keys on the IPN bus: a watcher must be a writer to watch without NotifyNoPrivateKeys
  (tailscaled's rule), and the backend gives a rotated node key only to the uid that handed the
  keys over (Permit.uid), so another operator or a reader never sees it.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Callable

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int

    def username(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


def peer_cred(sock: socket.socket) -> PeerCred:
    """SO_PEERCRED of a connected AF_UNIX socket (Linux)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)


@dataclass(frozen=True)
class Permit:
    read: bool
    write: bool
    who: str  # for messages/logs: "root", "operator alice", "user bob (uid 1001)"
    uid: int | None = None  # the caller's uid (SO_PEERCRED); None when unknown

    @property
    def is_root(self) -> bool:
        """uid 0 by peer credentials (root-only prefs and endpoints)."""
        return self.uid == 0


@dataclass(frozen=True)
class Operator:
    """`--operator` value: "alice" (a user) or ":netdev" (a group); "" = none."""

    spec: str = ""

    @property
    def group(self) -> str:
        return self.spec[1:] if self.spec.startswith(":") else ""

    @property
    def user(self) -> str:
        return "" if self.spec.startswith(":") else self.spec


class Authorizer:
    """Decides a Permit for a PeerCred. `pref_operator` reads the OperatorUser pref at call time."""

    def __init__(self, operator: Operator = Operator(), pref_operator: Callable[[], str] = lambda: "") -> None:
        self.operator = operator
        self.pref_operator = pref_operator

    def _user_uid(self, name: str) -> int | None:
        if not name:
            return None
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None

    def _in_group(self, cred: PeerCred, group: str) -> bool:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return False
        if cred.gid == gid:
            return True
        try:
            pw = pwd.getpwuid(cred.uid)
        except KeyError:
            return False
        return gid in os.getgrouplist(pw.pw_name, pw.pw_gid)

    def permit(self, cred: PeerCred) -> Permit:
        if cred.uid == 0:
            return Permit(True, True, "root", cred.uid)
        for name in (self.operator.user, self.pref_operator()):
            if name and self._user_uid(name) == cred.uid:
                return Permit(True, True, f"operator {name}", cred.uid)
        if self.operator.group and self._in_group(cred, self.operator.group):
            return Permit(True, True, f"operator group {self.operator.group} member {cred.username()}", cred.uid)
        return Permit(True, False, f"user {cred.username()} (uid {cred.uid})", cred.uid)

    def denial(self, permit: Permit, action: str) -> str:
        """The 403 message for a write by a reader."""
        who_may = ["root"]
        if self.operator.user:
            who_may.append(f"the operator user {self.operator.user!r}")
        if self.operator.group:
            who_may.append(f"members of the operator group {self.operator.group!r}")
        if self.pref_operator() and self.pref_operator() != self.operator.user:
            who_may.append(f"the operator user {self.pref_operator()!r}")
        return (
            f"{action} denied for {permit.who}: only {', '.join(who_may)} may change meshvpn; "
            "use sudo, or start the helper with --operator "
            f"{permit.who.split()[1] if permit.who.startswith('user ') else 'USER'}"
        )
