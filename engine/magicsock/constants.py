"""Path-discovery timing constants (tailscale wgengine/magicsock, seconds) and limits on network input."""

from engine.disco.message import MAX_CALL_ME_MAYBE_ENDPOINTS as MAX_CMM_ENDPOINTS  # noqa: F401

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

# ---- limits on network input (counted drops beyond them) ---------------------------------
# Endpoints taken from one CallMeMaybe (tailscale has no explicit cap, only the 64 KiB DERP
# frame, ~3600; a real node lists its STUN + interface addresses, rarely more than ~20).
# MAX_CMM_ENDPOINTS (imported above from engine.disco.message).
# Candidate addresses kept per peer (netmap + CallMeMaybe + ping sources); oldest non-netmap evicted.
MAX_CANDIDATES = 64
# Disco pings we send to one peer's addresses: a token bucket (one full CallMeMaybe at once,
# then a steady rate), so a peer cannot turn us into a reflector for its list of victims.
PEER_PING_BURST = 40
PEER_PING_RATE = 8.0
# Reader thread -> Device workers (WireGuard): queued datagrams/GRO runs (wireguard-go's
# QueueInboundSize); beyond it a datagram is dropped, as a full socket buffer would.
RX_QUEUE_MAX = 1024
# Reader thread -> event loop (disco + STUN): one batch, one loop wakeup per batch.
CTL_QUEUE_MAX = 256
# Disco/STUN datagrams accepted per source IP (token bucket), tracking at most CTL_MAX_SOURCES IPs.
# Generous for many peers behind one NAT (heartbeats every 3 s, discovery every 5 s).
CTL_SOURCE_RATE = 100.0
CTL_SOURCE_BURST = 200.0
CTL_MAX_SOURCES = 1024
# Address -> peer bindings (pong-verified) not among the peer's candidates are pruned this often.
ADDR_PRUNE_INTERVAL = 30.0
