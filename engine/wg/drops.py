"""Reasons for dropping peer input; each is counted, none is ever raised out of a receive path."""

from __future__ import annotations

import enum


class DropReason(enum.StrEnum):
    """Why a datagram was dropped (the value is the counter name suffix: ``drop_<value>``)."""

    NO_PRIVATE_KEY = "no_private_key"
    MALFORMED = "malformed"  # wrong size or type byte
    BAD_MAC1 = "bad_mac1"
    COOKIE_SENT = "cookie_sent"  # under load and no valid mac2: answered with a cookie reply
    RATE_LIMITED = "rate_limited"
    DECRYPT_STATIC = "decrypt_static"  # initiation's static key did not authenticate
    UNKNOWN_PEER = "unknown_peer"
    DECRYPT_TIMESTAMP = "decrypt_timestamp"
    REPLAYED_TIMESTAMP = "replayed_timestamp"  # TAI64N not newer than the last accepted one
    INITIATION_FLOOD = "initiation_flood"  # < 20 ms since the last initiation from that peer
    BAD_DH = "bad_dh"  # low-order public key
    UNKNOWN_INDEX = "unknown_index"
    UNEXPECTED_RESPONSE = "unexpected_response"  # no initiation outstanding for that index
    DECRYPT_RESPONSE = "decrypt_response"
    BAD_COOKIE_REPLY = "bad_cookie_reply"
    KEYPAIR_EXPIRED = "keypair_expired"  # older than REJECT_AFTER_TIME
    COUNTER_LIMIT = "counter_limit"  # counter ≥ REJECT_AFTER_MESSAGES
    DECRYPT_TRANSPORT = "decrypt_transport"
    REPLAY = "replay"
    BAD_INNER_PACKET = "bad_inner_packet"  # not IPv4/IPv6, or its length field lies
    DISALLOWED_SOURCE = "disallowed_source"  # inner source not in the peer's allowed-ips
