"""Lab and process-level tests of MagicDNS, exit-node routing and resolv.conf (unit tests: tests/unit/dns, filter)."""
