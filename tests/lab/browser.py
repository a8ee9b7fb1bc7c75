"""Lab browser SSO: Playwright drives Debian's headless Chromium through headscale's OIDC login, inside a lab netns."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import REPO_ROOT, LabError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--disable-dev-shm-usage",
)
ARTIFACTS = REPO_ROOT / "test-artifacts"
PASSWORD_ENV = "MESH_SSO_PASSWORD"  # the password travels in the child's environment, never in argv


class SsoLoginFailed(LabError):
    """The browser did not get through the SSO flow; message names the step and the page."""


@dataclass(frozen=True)
class SsoResult:
    """What the browser saw: the step names, their URLs (without query), screenshots and the final page text."""

    ok: bool
    steps: tuple[str, ...]
    urls: tuple[str, ...]
    screenshots: tuple[str, ...]
    final_text: str
    error: str = ""
    seconds: float = 0.0
    idp_origin: str = ""
    extra: dict = field(default_factory=dict)


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


# --- in-namespace part (runs as `python -m tests.lab.browser`) -----------------------


def _run_flow(auth_url: str, username: str, password: str, shots_dir: Path, prefix: str, timeout_s: float) -> dict:
    from playwright.sync_api import Error as PwError, sync_playwright

    steps: list[str] = []
    urls: list[str] = []
    shots: list[str] = []
    t0 = time.monotonic()
    ms = int(timeout_s * 1000)
    shots_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "ok": False,
        "steps": steps,
        "urls": urls,
        "screenshots": shots,
        "final_text": "",
        "error": "",
        "idp_origin": "",
    }

    def snap(page, name: str) -> None:
        steps.append(name)
        urls.append(_strip_query(page.url))
        path = shots_dir / f"{prefix}-{len(steps)}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(str(path))

    with tempfile.TemporaryDirectory(prefix="mesh-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1000, "height": 760},
            timeout=ms,
        )
        page = ctx.new_page()
        page.set_default_timeout(ms)
        try:
            # 1. headscale /register/<id> -> 302 to the IdP's /auth -> its login form.
            page.goto(auth_url, wait_until="load")
            page.wait_for_selector("input[name=password]")
            result["idp_origin"] = page.url.split("/interaction/", 1)[0]
            snap(page, "idp-login")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            snap(page, "idp-filled")
            # 2. submit -> IdP -> headscale /oidc/callback -> confirmation page (form POST /register/confirm/<id>).
            with page.expect_navigation(wait_until="load"):
                page.click("button[type=submit]")
            page.wait_for_selector("form[action*='/register/confirm/'], #error")
            if page.locator("#error").count():
                snap(page, "idp-error")
                raise SsoLoginFailed(f"IdP rejected the login: {page.inner_text('#error')}")
            snap(page, "hs-confirm")
            # 3. confirm the registration -> headscale's success page.
            form = page.locator("form[action*='/register/confirm/']")
            with page.expect_navigation(wait_until="load"):
                form.locator("button, input[type=submit]").first.click()
            snap(page, "hs-done")
            result["final_text"] = page.inner_text("body")[:2000]
            result["ok"] = True
        except (PwError, SsoLoginFailed) as e:
            try:
                if not isinstance(e, SsoLoginFailed):
                    snap(page, "failed")
                result["final_text"] = page.inner_text("body")[:2000]
            except PwError:
                pass
            result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
        finally:
            ctx.close()
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--auth-url", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--shots-dir", default=str(ARTIFACTS))
    ap.add_argument("--prefix", default="sso")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-step timeout in seconds")
    a = ap.parse_args(argv)
    password = os.environ.get(PASSWORD_ENV, "")
    res = _run_flow(a.auth_url, a.username, password, Path(a.shots_dir), a.prefix, a.timeout)
    print(json.dumps(res), flush=True)
    return 0 if res["ok"] else 1


# --- test-side API --------------------------------------------------------------------


def complete_sso_login(
    auth_url: str,
    username: str,
    password: str,
    netns: str,
    *,
    shots_dir: Path | None = None,
    prefix: str = "sso",
    timeout: float = 90.0,
    check: bool = True,
) -> SsoResult:
    """Open ``auth_url`` in headless Chromium inside ``netns``, sign in at the IdP, confirm at headscale.

    Screenshots of each step go to ``shots_dir`` (default test-artifacts/) as ``<prefix>-<n>-<step>.png``.
    Raises SsoLoginFailed (with the steps reached) when ``check`` and the flow did not finish.
    """
    shots = shots_dir or ARTIFACTS
    for old in Path(shots).glob(f"{prefix}-[0-9]*-*.png") if Path(shots).is_dir() else ():
        old.unlink()
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        sys.executable,
        "-m",
        "tests.lab.browser",
        "--auth-url",
        auth_url,
        "--username",
        username,
        "--shots-dir",
        str(shots),
        "--prefix",
        prefix,
        "--timeout",
        str(max(5.0, timeout / 3)),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), PASSWORD_ENV: password, "HOME": os.environ.get("HOME", "/root")}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired as e:
        raise SsoLoginFailed(f"browser did not finish within {timeout}s") from e
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    try:
        data = json.loads(last)
    except ValueError as e:
        raise SsoLoginFailed(f"browser helper failed rc={p.returncode}: {p.stderr.strip()[-2000:]}") from e
    res = SsoResult(
        ok=bool(data["ok"]),
        steps=tuple(data["steps"]),
        urls=tuple(data["urls"]),
        screenshots=tuple(data["screenshots"]),
        final_text=data["final_text"],
        error=data["error"],
        seconds=float(data.get("seconds", 0.0)),
        idp_origin=data.get("idp_origin", ""),
    )
    if check and not res.ok:
        raise SsoLoginFailed(
            f"SSO flow failed after steps {list(res.steps)} at {res.urls[-1:]}: {res.error}\n"
            f"page: {res.final_text[:500]}\nstderr: {p.stderr.strip()[-1500:]}"
        )
    return res


__all__ = ["complete_sso_login", "SsoResult", "SsoLoginFailed", "CHROMIUM", "CHROMIUM_ARGS"]

if __name__ == "__main__":
    sys.exit(main())
