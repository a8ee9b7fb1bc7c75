"""DERP: tailscale's TCP relay (frame codec, client state machine, asyncio client, region set)."""
