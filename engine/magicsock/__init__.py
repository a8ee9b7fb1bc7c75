"""magicsock: one UDP socket + DERP carrying WireGuard, with disco path discovery per peer."""
