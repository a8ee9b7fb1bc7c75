"""Who may change which prefs: root-only fields, checked on the old→new diff of every caller's edit.

Every path that changes prefs for a LocalAPI caller (PATCH prefs, POST start's UpdatePrefs,
set-use-exit-node, …) ends in Backend._commit_user_prefs, which calls check_change() with the
prefs before and after. Checking the resulting diff, not the request's shape, means a new
endpoint or a whole-Prefs copy cannot slip a root-only field past the rule.
"""

from __future__ import annotations

from engine.ipn.backend import PrefsError
from engine.localapi.schema import Prefs

# ipn.Prefs fields (Go names) only root may change: OperatorUser decides who else may control the helper.
ROOT_ONLY_PREFS: frozenset[str] = frozenset({"OperatorUser"})


class PrefsDenied(PrefsError):
    """A caller that is not root tried to change a root-only pref (the LocalAPI answers 403)."""


def changed_fields(old: Prefs, new: Prefs, fields: frozenset[str]) -> list[str]:
    """The Go names among `fields` whose values differ between `old` and `new`, sorted."""
    g2a = Prefs.go_to_attr()
    return sorted(f for f in fields if getattr(old, g2a[f]) != getattr(new, g2a[f]))


def check_change(old: Prefs, new: Prefs, *, actor_is_root: bool, who: str = "") -> None:
    """Raise PrefsDenied if a caller that is not root would change a root-only pref."""
    if actor_is_root:
        return
    bad = changed_fields(old, new, ROOT_ONLY_PREFS)
    if bad:
        by = f" by {who}" if who else ""
        raise PrefsDenied(
            f"changing {', '.join(bad)} denied{by}: only root may change {'it' if len(bad) == 1 else 'them'} (use sudo)"
        )
