"""Tailscale control protocol client: ts2021 Noise transport, HTTP/2, register and map long-poll."""
