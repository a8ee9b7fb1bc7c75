"""Command-line entry points: mesh-helper (privileged helper) and meshctl (LocalAPI client)."""
