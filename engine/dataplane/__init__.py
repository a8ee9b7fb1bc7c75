"""Userspace WireGuard data plane: TUN, UDP bind and the Device that joins them to the wg core."""
