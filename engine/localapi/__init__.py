"""LocalAPI: tailscaled-compatible HTTP over a Unix socket (schema, server, client, auth)."""
