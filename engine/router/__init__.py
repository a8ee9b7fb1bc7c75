"""OS routing for the TUN: addresses and routes (linux.py), exit-node policy routing (exitnode.py), forwarding/NAT (nft.py)."""
