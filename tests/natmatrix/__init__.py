"""NAT matrix lab: tailscaled (and later our node) behind every pair of NAT kinds; see docs/nat-matrix.md."""
