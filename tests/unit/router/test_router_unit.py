"""LinuxRouter command generation: idempotent, minimal diffs, empty config restores (fake runner)."""

from engine.router.linux import LinuxRouter
from engine.wgengine.reconfig import RouterConfig


def make():
    calls = []
    r = LinuxRouter("mesh0", runner=lambda argv, batch: calls.append(batch.splitlines()))
    return r, calls


def test_idempotent_and_restore():
    r, calls = make()
    cfg = RouterConfig(local_addrs=("100.64.0.1/32", "fd7a:115c:a1e0::1/128"), routes=("100.64.0.2/32",))
    r.set(cfg)
    assert calls[-1] == [
        "addr replace 100.64.0.1/32 dev mesh0",
        "addr replace fd7a:115c:a1e0::1/128 dev mesh0 nodad",
        "route replace 100.64.0.2/32 dev mesh0",
    ]
    r.set(cfg)
    assert len(calls) == 1  # same config twice: nothing runs
    r.set(RouterConfig(local_addrs=cfg.local_addrs, routes=("100.64.0.3/32",)))
    assert calls[-1] == ["route del 100.64.0.2/32 dev mesh0", "route replace 100.64.0.3/32 dev mesh0"]
    r.close()
    assert calls[-1] == [
        "route del 100.64.0.3/32 dev mesh0",
        "addr del 100.64.0.1/32 dev mesh0",
        "addr del fd7a:115c:a1e0::1/128 dev mesh0",
    ]
    r.close()
    assert len(calls) == 3
