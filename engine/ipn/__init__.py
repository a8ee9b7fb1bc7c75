"""IPN: the backend state machine (state.py), prefs logic (backend.py), LocalBackend (local.py), engine adapters."""
