"""Path-discovery timing constants (tailscale wgengine/magicsock), in seconds."""

# How often we may ping any one candidate endpoint during discovery (discoPingInterval).
DISCO_PING_INTERVAL = 5.0
# A ping with no pong after this long is abandoned (pingTimeoutDuration).
PING_TIMEOUT = 5.0
# While sending, ping the current direct path this often (heartbeatInterval).
HEARTBEAT_INTERVAL = 3.0
# A pong on the best address makes it trusted for this long (trustUDPAddrDuration): a little
# more than two heartbeats, so one lost pong does not drop us to DERP.
TRUST_UDP_ADDR_DURATION = 6.5
# Heartbeats stop after this long without outbound data (sessionActiveTimeout).
SESSION_ACTIVE_TIMEOUT = 45.0
# Re-run full discovery this often even on a good direct path if its latency is above
# GOOD_ENOUGH_LATENCY (upgradeInterval / goodEnoughLatency).
UPGRADE_INTERVAL = 60.0
GOOD_ENOUGH_LATENCY = 0.005
# Our own STUN-learned endpoints are refreshed before CallMeMaybe if older than this.
ENDPOINTS_FRESH_ENOUGH = 27.0
# Candidate endpoints learned from pings/CallMeMaybe are forgotten after this long unheard.
CANDIDATE_EXPIRY = 120.0
# Source address representing "via DERP region N" (tailcfg.DerpMagicIP).
DERP_MAGIC_IP = "127.3.3.40"
