"""Networking below the tunnel: STUN, netcheck, interface enumeration, tailnet address ranges, socket options."""
