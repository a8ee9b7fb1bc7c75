"""DaemonEngine passes the backend's prefs into daemon.Node: at start (flags) and on reconfigure (Node.set_prefs)."""

from __future__ import annotations

import argparse
import asyncio
import logging

import pytest

from engine.daemon import Node, NodePrefs, NodeState, build_parser, prefs_from_args
from engine.ipn.daemon_engine import DaemonEngine, node_prefs_args
from engine.ipn.engine_api import EngineConfig


class Rec:
    """Recording stand-in for the OS-facing parts (device, routers, forwarder)."""

    listen_port = 41641

    def __getattr__(self, name):
        return lambda *a, **kw: [] if name == "cleanup_leftovers" else None


FULL = EngineConfig(control_url="http://127.0.0.1:1", exit_node_id="nXYZCNTRL", exit_node_ip="100.64.0.3",
                    exit_node_allow_lan_access=True, corp_dns=False, route_all=True,
                    advertise_routes=("10.1.0.0/16",), shields_up=True)


def test_start_flags_carry_every_pref():
    a = node_prefs_args(FULL)
    prefs = prefs_from_args(argparse.Namespace(**a))
    assert prefs == NodePrefs(exit_node="nXYZCNTRL", exit_node_allow_lan=True, advertise_exit_node=False,
                              advertise_routes=("10.1.0.0/16",), accept_dns=False, accept_routes=True,
                              shields_up=True)
    by_ip = prefs_from_args(argparse.Namespace(**node_prefs_args(EngineConfig(control_url="x",
                                                                              exit_node_ip="100.64.0.3"))))
    assert by_ip.exit_node == "100.64.0.3" and not by_ip.shields_up and by_ip.accept_dns
    offer = prefs_from_args(argparse.Namespace(**node_prefs_args(EngineConfig(
        control_url="x", advertise_routes=("0.0.0.0/0", "::/0", "10.2.0.0/24")))))
    assert offer.advertise_exit_node and offer.advertise_routes == ("10.2.0.0/24",)
    assert offer.routable_ips() == ("10.2.0.0/24", "0.0.0.0/0", "::/0")


@pytest.fixture
def engine_with_node(tmp_path):
    args = build_parser().parse_args(["--login-server", "http://127.0.0.1:1", "--state", str(tmp_path / "s"),
                                      "--tun", "mesh9"])
    n = Node(args, NodeState.generate(), tmp_path / "s", logging.getLogger("test"), device_factory=Rec,
             router_factory=Rec, exit_router_factory=Rec, forwarder_factory=Rec)
    n._open_os_routing()
    n._open_dataplane()
    eng = DaemonEngine()
    eng._node = n
    return eng, n


def test_reconfigure_sets_node_prefs(engine_with_node):
    eng, n = engine_with_node
    asyncio.run(eng.reconfigure(FULL))
    assert n.prefs == NodePrefs(exit_node="nXYZCNTRL", exit_node_allow_lan=True, advertise_routes=("10.1.0.0/16",),
                                accept_dns=False, accept_routes=True, shields_up=True)
    asyncio.run(eng.reconfigure(EngineConfig(control_url="http://127.0.0.1:1")))  # `--exit-node=` etc.
    assert n.prefs == NodePrefs()
