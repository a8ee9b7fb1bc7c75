"""Tests for the packet filter, MagicDNS and exit-node routing (engine/filter, engine/dns, engine/router exit/nft)."""
