"""Undoing OS changes after a crash: the journal of changes and the vetting of what a previous run left."""
