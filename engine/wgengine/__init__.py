"""The userspace WireGuard engine: device, magicsock, router, DNS, packet filter and peerAPI of one node."""
