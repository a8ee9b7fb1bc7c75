"""Disco: tailscale's NaCl-boxed path discovery messages (ping, pong, call-me-maybe)."""
