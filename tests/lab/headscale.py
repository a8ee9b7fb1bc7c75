"""Headscale runner for lab tests: config (sqlite, embedded DERP+STUN on the lab address), serve, CLI helpers.

    hs = Headscale(host, policy={...ACL...}, extra_config={"oidc": {...}}).start()

``policy`` becomes a file-mode ACL policy; ``extra_config`` (and later ``add_config``) is
deep-merged into the generated config, so callers never rewrite the config file themselves.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.lab.netlab import Host, LabError, stop_process, wait_ready
from tests.lab.peers import peer_bin

BASE_DOMAIN = "mesh.test"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``extra`` merged in: nested dicts merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _config(d: Path, addr: str, port: int, stun_port: int, log_level: str) -> dict[str, Any]:
    host = f"[{addr}]" if ":" in addr else addr
    cfg = {
        "server_url": f"http://{host}:{port}",
        "listen_addr": f"{host}:{port}",
        "metrics_listen_addr": "127.0.0.1:9090",  # debug endpoints (/debug/ping), loopback of the ctl host
        "grpc_listen_addr": "127.0.0.1:0",
        "grpc_allow_insecure": False,
        "noise": {"private_key_path": str(d / "noise_private.key")},
        "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48", "allocation": "sequential"},
        "derp": {
            "server": {
                "enabled": True,
                "region_id": 999,
                "region_code": "lab",
                "region_name": "Lab embedded DERP",
                "verify_clients": True,
                "stun_listen_addr": f"{host}:{stun_port}",
                "private_key_path": str(d / "derp_server_private.key"),
                "automatically_add_embedded_derp_region": True,
                "ipv4": addr if ":" not in addr else "",
                "ipv6": addr if ":" in addr else "",
            },
            "urls": [],
            "paths": [],
            "auto_update_enabled": False,
            "update_frequency": "24h",
        },
        "disable_check_updates": True,
        "database": {"type": "sqlite", "sqlite": {"path": str(d / "db.sqlite"), "write_ahead_log": True}},
        "log": {"level": log_level, "format": "text"},
        "policy": {"mode": "file", "path": ""},
        "dns": {
            "magic_dns": True,
            "base_domain": BASE_DOMAIN,
            "override_local_dns": False,
            "nameservers": {"global": [], "split": {}},
            "search_domains": [],
            "extra_records": [],
        },
        "unix_socket": str(d / "headscale.sock"),
        "unix_socket_permission": "0770",
        "logtail": {"enabled": False},
    }
    return cfg


class Headscale:
    """headscale serving on ``addr:port`` inside ``host`` (a lab namespace)."""

    def __init__(
        self,
        host: Host,
        addr: str | None = None,
        *,
        port: int = 8080,
        stun_port: int = 3478,
        log_level: str = "info",
        policy: dict | None = None,
        extra_config: dict | None = None,
    ) -> None:
        self.host = host
        self.addr = addr or host.addr
        self.port = port
        self.stun_port = stun_port
        self.dir = host.lab.dir / f"headscale-{host.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.yaml"
        self.config_dict = _config(self.dir, self.addr, port, stun_port, log_level)
        if policy is not None:
            path = self.dir / "policy.json"
            path.write_text(json.dumps(policy, indent=1))
            self.config_dict["policy"] = {"mode": "file", "path": str(path)}
        if extra_config:
            self.config_dict = deep_merge(self.config_dict, extra_config)
        self._write_config()
        self.bin = peer_bin("headscale")
        self.proc: subprocess.Popen | None = None
        self._user_ids: dict[str, int] = {}

    def _write_config(self) -> None:
        self.config.write_text(json.dumps(self.config_dict, indent=2))  # JSON is valid YAML (viper reads it)

    def add_config(self, extra: dict) -> None:
        """Deep-merge ``extra`` into the config before start() (e.g. an `oidc:` section)."""
        if self.proc is not None:
            raise LabError("Headscale.add_config must be called before start()")
        self.config_dict = deep_merge(self.config_dict, extra)
        self._write_config()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------
    def start(self, timeout: float = 30) -> "Headscale":
        self.proc = self.host.popen([self.bin, "-c", str(self.config), "serve"])
        self.host.lab.add_cleanup(self.stop)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            p = self.host.run(["curl", "-fsS", "-m", "2", f"{self.url}/health"], check=False, timeout=5)
            return p.returncode == 0 and (self.dir / "headscale.sock").exists()

        wait_ready(
            ready,
            what="headscale",
            until="GET /health answers and the CLI socket exists",
            proc=self.proc,
            timeout=timeout,
            interval=0.2,
            log=self.log,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.proc = self.host.popen([self.bin, "-c", str(self.config), "serve"])
        self.wait_ready()

    def log(self) -> str:
        return "\n".join(Host.log_of(p) for p in self.host._procs if self.bin in " ".join(map(str, p.args)))

    # -- CLI --------------------------------------------------------------------------
    def cli(self, *args: str, json_out: bool = True, timeout: float = 30):
        argv = [self.bin, "-c", str(self.config), *args]
        if json_out:
            argv += ["-o", "json"]
        p = self.host.run(argv, timeout=timeout)
        if not json_out:
            return p.stdout
        out = p.stdout.strip()
        return json.loads(out) if out else None

    def create_user(self, name: str) -> int:
        self.cli("users", "create", name)
        for u in self.cli("users", "list") or []:
            if u.get("name") == name:
                self._user_ids[name] = int(u["id"])
                return int(u["id"])
        raise LabError(f"user {name} not found after create")

    def preauth_key(
        self, user: str | int, *, reusable: bool = True, ephemeral: bool = False, expiration: str = "1h"
    ) -> str:
        uid = user if isinstance(user, int) else self._user_ids.get(user) or self.create_user(user)
        args = ["preauthkeys", "create", "--user", str(uid), "-e", expiration]
        if reusable:
            args.append("--reusable")
        if ephemeral:
            args.append("--ephemeral")
        out = self.cli(*args)
        key = out.get("key") if isinstance(out, dict) else None
        if not key:
            raise LabError(f"unexpected preauthkeys output: {str(out)[:200]}")
        return key

    def nodes(self) -> list[dict]:
        return self.cli("nodes", "list") or []

    def node_by_hostname(self, hostname: str) -> dict | None:
        for n in self.nodes():
            if n.get("name") == hostname or n.get("given_name") == hostname:
                return n
        return None

    def register(self, auth_id: str, user: str) -> None:
        """Approve an interactive login (the command /register/<id> tells the admin to run)."""
        self.cli("auth", "register", "--auth-id", auth_id, "--user", user, json_out=False)

    def debug_ping(self, node: str | int, timeout: float = 40) -> str:
        """Ask headscale to send the node a PingRequest (/debug/ping); returns the result page text."""
        p = self.host.run(
            ["curl", "-sS", "-m", str(int(timeout)), f"http://127.0.0.1:9090/debug/ping?node={node}"],
            timeout=timeout + 5,
        )
        return p.stdout

    def delete_node(self, node_id: int) -> None:
        self.cli("nodes", "delete", "-i", str(node_id), "--force", json_out=False)

    def expire_node(self, node_id: int) -> None:
        self.cli("nodes", "expire", "-i", str(node_id), json_out=False)


def auth_id_from_url(auth_url: str) -> str:
    """The <auth_id> of ``<server>/register/<auth_id>``."""
    return auth_url.rstrip("/").rsplit("/", 1)[1]


__all__ = ["Headscale", "auth_id_from_url", "deep_merge", "BASE_DOMAIN"]
