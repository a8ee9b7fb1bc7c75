"""Main-table routes from a netmap (wgengine.reconfig.router_config) and LinuxRouter ip commands (recording runner)."""

from __future__ import annotations

from engine.router.linux import LinuxRouter
from engine.wgengine.reconfig import ReconfigOptions, RouterConfig, router_config, wg_config
from tests.unit.wgengine.fakes import session_netmap


def test_router_config_keeps_defaults_out_of_main():
    _, nm = session_netmap()
    wg = wg_config(nm, ReconfigOptions(exit_node_id=3, accept_routes=True))
    rc = router_config(nm, wg)
    assert "10.9.0.0/16" in rc.routes and "100.64.0.3/32" in rc.routes
    assert not {"0.0.0.0/0", "::/0"} & set(rc.routes)


def test_linux_router_service_addresses():
    calls = []
    r = LinuxRouter(
        "mesh0",
        runner=lambda argv, batch: calls.append(batch.splitlines()),
        service_addrs=("100.100.100.100/32", "fd7a:115c:a1e0::53/128"),
    )
    r.up(1280)
    assert calls[-1] == [
        "addr replace 100.100.100.100/32 dev mesh0 scope host",
        "addr replace fd7a:115c:a1e0::53/128 dev mesh0 nodad preferred_lft 0",
    ]
    r.set(RouterConfig(local_addrs=("100.64.0.1/32",), routes=("100.64.0.2/32",)))
    assert calls[-1] == ["addr replace 100.64.0.1/32 dev mesh0", "route replace 100.64.0.2/32 dev mesh0"]
    r.set(RouterConfig())  # logged out: quad-100 stays while the node runs
    assert calls[-1] == ["route del 100.64.0.2/32 dev mesh0", "addr del 100.64.0.1/32 dev mesh0"]
    r.close()
    assert calls[-1] == ["addr del 100.100.100.100/32 dev mesh0", "addr del fd7a:115c:a1e0::53/128 dev mesh0"]
