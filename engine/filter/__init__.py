"""Packet filter: tailcfg FilterRules compiled into a stateful inbound/outbound matcher."""

from engine.filter.filter import ACCEPT, DROP, LRU_SIZE, DropReason, Filter, Verdict
from engine.filter.packet import Parsed, parse
from engine.filter.rules import FilterRuleError, Match, compile_rules, concat_packet_filters, parse_ip_set

__all__ = [
    "ACCEPT",
    "DROP",
    "LRU_SIZE",
    "DropReason",
    "Filter",
    "Verdict",
    "Parsed",
    "parse",
    "FilterRuleError",
    "Match",
    "compile_rules",
    "concat_packet_filters",
    "parse_ip_set",
]
