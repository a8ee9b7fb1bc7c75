"""Lab OpenID provider (npm oidc-provider with static users and a login form), headscale's `oidc:` config, SSO lab.

Usage (any client under test; the browser step is tests/lab/browser.py)::

    sso = start_sso_lab(lab)                  # idp + headscale(OIDC) + client host "laptop" on one switch
    ...start a client in sso.client with --login-server=sso.login_server, get its AuthURL...
    sso.login_with_browser(auth_url)          # Chromium signs in as sso.idp.user() and confirms
    assert sso.node_user("hostname")["provider"] == "oidc"

Needs `installers/dev/oidc-setup.sh` (node modules in <peer cache>/oidc-node, Playwright driver).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.headscale import Headscale
from tests.lab.netlab import REPO_ROOT, Host, LabError, stop_process, wait_ready

IDP_SCRIPT = REPO_ROOT / "tests" / "oidc" / "idp" / "provider.mjs"
NODE_DIR_DEFAULT = Path(os.environ.get("MESH_PEER_CACHE", "/var/cache/meshvpn-peers")) / "oidc-node"
SETUP_HINT = "run installers/dev/oidc-setup.sh"
DEFAULT_PORT = 5556


class OidcSetupMissing(LabError):
    """node or the pinned oidc-provider modules are not installed."""


@dataclass(frozen=True)
class OidcUser:
    """A static account of the lab IdP; repr never shows the password."""

    username: str
    password: str = field(repr=False)
    email: str = ""
    name: str = ""

    def as_json(self) -> dict:
        return {
            "username": self.username,
            "password": self.password,
            "email": self.email or f"{self.username}@example.com",
            "name": self.name or self.username.capitalize(),
        }


@dataclass(frozen=True)
class OidcClient:
    """An OAuth client registered at the IdP; repr never shows the secret."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...] = ()


def node_modules_dir() -> Path:
    """node_modules of the pinned oidc-provider ($MESH_OIDC_NODE_DIR or <peer cache>/oidc-node)."""
    base = Path(os.environ.get("MESH_OIDC_NODE_DIR") or NODE_DIR_DEFAULT)
    mods = base / "node_modules"
    if not (mods / "oidc-provider" / "package.json").is_file():
        raise OidcSetupMissing(f"oidc-provider not installed in {mods}; {SETUP_HINT}")
    return mods


def node_bin() -> str:
    found = shutil.which("node")
    if not found:
        raise OidcSetupMissing(f"node not found; {SETUP_HINT} (apt-get install nodejs)")
    return found


class OidcProvider:
    """The lab IdP serving ``http://addr:port`` inside ``host``; issuer/client_id/client_secret for a relying party."""

    def __init__(
        self,
        host: Host,
        addr: str | None = None,
        *,
        port: int = DEFAULT_PORT,
        users: tuple[OidcUser, ...] | None = None,
        client_id: str = "headscale",
    ) -> None:
        self.host = host
        self.addr = addr or host.addr
        self.port = port
        self.users = users or (OidcUser("alice", secrets.token_urlsafe(12), "alice@example.com", "Alice Lab"),)
        self.client = OidcClient(client_id, secrets.token_urlsafe(24))
        self.proc: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}"

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def client_secret(self) -> str:
        return self.client.client_secret

    def user(self, username: str | None = None) -> OidcUser:
        if username is None:
            return self.users[0]
        for u in self.users:
            if u.username == username:
                return u
        raise KeyError(username)

    def allow_redirect(self, uri: str) -> None:
        """Register a redirect URI for the client (call before start)."""
        if self.proc is not None:
            raise LabError("allow_redirect must be called before start()")
        self.client = OidcClient(self.client.client_id, self.client.client_secret, (*self.client.redirect_uris, uri))

    # -- lifecycle --------------------------------------------------------------------
    def start(self, timeout: float = 30) -> "OidcProvider":
        if not self.client.redirect_uris:
            raise LabError("OidcProvider needs at least one redirect URI (allow_redirect / for_headscale)")
        cfg = {
            "issuer": self.issuer,
            "host": self.addr,
            "port": self.port,
            "modules_dir": str(node_modules_dir()),
            "clients": [
                {
                    "client_id": self.client.client_id,
                    "client_secret": self.client.client_secret,
                    "redirect_uris": list(self.client.redirect_uris),
                }
            ],
            "users": [u.as_json() for u in self.users],
        }
        # The config carries secrets: hand it over on stdin, never in argv or a file in the lab dir.
        self.proc = self.host.popen(
            [node_bin(), str(IDP_SCRIPT), "/dev/stdin"], stdin=subprocess.PIPE, env={"NODE_ENV": "production"}
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cfg).encode())
        self.proc.stdin.close()
        self.host.lab.add_cleanup(self.stop)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"

        def ready() -> bool:
            p = self.host.run(["curl", "-fsS", "-m", "2", url], check=False, timeout=5)
            if p.returncode == 0:
                try:
                    return json.loads(p.stdout).get("issuer") == self.issuer
                except ValueError:
                    pass
            return False

        wait_ready(
            ready,
            what="OpenID provider",
            until="its discovery document names the issuer",
            proc=self.proc,
            timeout=timeout,
            interval=0.2,
            log=self.log,
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def log(self) -> str:
        return Host.log_of(self.proc) if self.proc else ""

    # -- relying party: headscale -------------------------------------------------------
    def headscale_config(self, secret_path: Path, **extra) -> dict:
        """The `oidc:` section for headscale (client secret written to ``secret_path``, mode 0600)."""
        secret_path.write_text(self.client.client_secret)
        secret_path.chmod(0o600)
        cfg = {
            "only_start_if_oidc_is_available": True,
            "issuer": self.issuer,
            "client_id": self.client.client_id,
            "client_secret_path": str(secret_path),
            "scope": ["openid", "profile", "email"],
            "email_verified_required": True,
            "pkce": {"enabled": True, "method": "S256"},
        }
        cfg.update(extra)
        return cfg


def enable_oidc(hs: Headscale, idp: OidcProvider, **extra) -> None:
    """Add an `oidc:` section for ``idp`` to a not-yet-started tests.lab.headscale.Headscale
    (Headscale.add_config) and register headscale's /oidc/callback at the IdP."""
    if hs.proc is not None:
        raise LabError("enable_oidc must be called before Headscale.start()")
    idp.allow_redirect(f"{hs.url}/oidc/callback")
    hs.add_config({"oidc": idp.headscale_config(hs.dir / "oidc_client_secret", **extra)})


def oidc_users(hs: Headscale) -> list[dict]:
    """headscale users that came from OIDC (provider "oidc")."""
    return [u for u in (hs.cli("users", "list") or []) if u.get("provider") == "oidc"]


__all__ = [
    "OidcProvider",
    "OidcUser",
    "OidcClient",
    "OidcSetupMissing",
    "enable_oidc",
    "oidc_users",
    "node_modules_dir",
    "node_bin",
    "IDP_SCRIPT",
]


# --- the whole SSO lab: IdP + headscale(OIDC) + a client host, and the browser step ----------


@dataclass
class SsoLab:
    """Hosts ``ctl`` (headscale), ``idp`` (OpenID provider) and ``client`` on one lab switch."""

    ctl: Host
    idp_host: Host
    client: Host
    idp: OidcProvider
    hs: Headscale

    @property
    def login_server(self) -> str:
        return self.hs.url

    def login_with_browser(
        self,
        auth_url: str,
        *,
        username: str | None = None,
        netns: str | None = None,
        prefix: str = "sso",
        timeout: float = 90.0,
    ):
        """Finish an interactive login for ``auth_url`` (any client's AuthURL) as an IdP user, in a real browser.

        This is the helper for every client under test: give it the URL that tailscaled's status,
        or our LocalAPI's BrowseToURL, reported. The browser runs in ``netns`` (default: the client
        host). Returns the browser's SsoResult; raises SsoLoginFailed when the flow did not finish.
        """
        from tests.lab.browser import complete_sso_login

        if not auth_url.startswith(self.hs.url + "/register/"):
            raise LabError(f"not an AuthURL of this headscale ({self.hs.url}): {auth_url[:200]}")
        user = self.idp.user(username)
        return complete_sso_login(
            auth_url, user.username, user.password, netns or self.client.ns, prefix=prefix, timeout=timeout
        )

    def node_user(self, hostname: str) -> dict | None:
        """The headscale user owning node ``hostname`` (None if no such node)."""
        node = self.hs.node_by_hostname(hostname)
        return None if node is None else node.get("user")


def start_sso_lab(
    lab, *, subnet: str = "192.0.2", client_name: str = "laptop", users: tuple[OidcUser, ...] | None = None
) -> SsoLab:
    """Build and start the SSO lab: switch ``<subnet>.0/24`` with ctl .1, idp .2, client .10."""
    sw = lab.switch("sso")
    ctl, idp_host, client = lab.host("ctl"), lab.host("idp"), lab.host(client_name)
    sw.attach(ctl, f"{subnet}.1/24")
    sw.attach(idp_host, f"{subnet}.2/24")
    sw.attach(client, f"{subnet}.10/24")
    idp = OidcProvider(idp_host, users=users)
    hs = Headscale(ctl)
    enable_oidc(hs, idp)
    idp.start()
    hs.start()
    return SsoLab(ctl=ctl, idp_host=idp_host, client=client, idp=idp, hs=hs)


__all__ += ["SsoLab", "start_sso_lab"]
