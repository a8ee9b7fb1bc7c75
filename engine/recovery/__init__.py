"""Undoing OS changes after a crash: the helper's one journal of OS changes (journal.py)."""
