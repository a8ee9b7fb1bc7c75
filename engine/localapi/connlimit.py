"""LocalAPI connection admission (sans-IO): per-uid caps and slots only root and the operator may use.

    tier        may hold a connection while          per-uid cap
    root        total < total                         none
    operator    total < total - root_reserved         none
    everyone    total < total - root_reserved         per_uid
                          - privileged_reserved

So one local user (or several) opening read-only watch streams fills at most the "everyone" part;
the operator still gets in, and root always has `root_reserved` slots nobody else may take.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass


class Tier(enum.Enum):
    ROOT = "root"
    OPERATOR = "operator"
    USER = "user"


@dataclass(frozen=True)
class ConnLimits:
    total: int = 64
    """Connections open at once, all callers together."""
    root_reserved: int = 4
    """Of `total`, slots only root may use."""
    privileged_reserved: int = 8
    """Further slots only root and the operator may use."""
    per_uid: int = 16
    """Connections one unprivileged uid may hold at once."""

    def __post_init__(self) -> None:
        if not 0 < self.per_uid <= self.total - self.root_reserved - self.privileged_reserved:
            raise ValueError("ConnLimits: need 0 < per_uid <= total - root_reserved - privileged_reserved")


class Admission:
    """Counts open connections by uid; admit() says yes (and counts it) or why not."""

    def __init__(self, limits: ConnLimits = ConnLimits()) -> None:
        self.limits = limits
        self.total = 0
        self.by_uid: collections.Counter[int] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()  # reason -> count

    def admit(self, uid: int, tier: Tier) -> str:
        """ "" when admitted (release(uid) later); else the reason ("per_uid", "full")."""
        lim = self.limits
        cap = lim.total
        if tier is not Tier.ROOT:
            cap -= lim.root_reserved
        if tier is Tier.USER:
            cap -= lim.privileged_reserved
            if self.by_uid[uid] >= lim.per_uid:
                self.rejected["per_uid"] += 1
                return "per_uid"
        if self.total >= cap:
            self.rejected["full"] += 1
            return "full"
        self.total += 1
        self.by_uid[uid] += 1
        return ""

    def release(self, uid: int) -> None:
        if self.by_uid[uid] <= 0:
            raise RuntimeError(f"Admission.release: uid {uid} holds no connection")
        self.total -= 1
        self.by_uid[uid] -= 1
        if not self.by_uid[uid]:
            del self.by_uid[uid]
