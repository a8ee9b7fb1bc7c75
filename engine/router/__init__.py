"""Routing for the TUN: addresses/routes (linux.py), exit-node policy routes (exitnode.py), forwarding/NAT (nft.py)."""
