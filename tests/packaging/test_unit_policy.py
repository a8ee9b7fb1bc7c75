"""The systemd unit's hardening and the polkit files as shipped in resources/ (no package build needed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.conftest import ROOT

UNIT = ROOT / "resources/systemd/mesh-helper.service"
POLICY = ROOT / "resources/polkit/org.meshvpn.helper.policy"
RULES = ROOT / "resources/polkit/50-meshvpn.rules"


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_the_hardening():
    d = directives(UNIT.read_text())
    assert d["LimitNOFILE"] and int(d["LimitNOFILE"][0]) <= 65536
    assert re.fullmatch(r"\d+[KMG]", d["MemoryMax"][0])
    assert d["ProtectKernelTunables"] == ["yes"] and d["PrivateIPC"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    rw = " ".join(d["ReadWritePaths"]).split()
    sysctl_paths = [p.lstrip("-") for p in rw if p.lstrip("-").startswith("/proc/")]
    assert sorted(sysctl_paths) == ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"]
    # a missing /etc/resolv.conf must not keep the unit from starting; /etc itself is not writable
    assert [p for p in rw if "resolv.conf" in p] == ["-/etc/resolv.conf"]
    assert "/etc" not in rw and "-/etc" not in rw
    assert not [v for v in d.get("BindPaths", []) if "resolv.conf" in v and not v.startswith("-")]


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    exe = Path(sys.executable).with_name("mesh-helper")
    if not exe.exists():
        exe = Path(shutil.which("true") or "/bin/true")
    unit = tmp_path / "mesh-helper.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/mesh-helper", str(exe)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert r.returncode == 0, r.stderr
    assert "Unknown key" not in r.stderr and "Failed to parse" not in r.stderr, r.stderr


def test_policy_is_one_argumentless_action_asking_admin_every_time():
    text = POLICY.read_text()
    assert re.findall(r'<action id="([^"]+)"', text) == ["org.meshvpn.helper.start"]
    assert "auth_admin_keep" not in text and "allow_any>yes" not in text and "allow_active>yes" not in text
    paths = re.findall(r'policykit.exec.path">([^<]+)<', text)
    assert paths == ["/usr/libexec/meshvpn/mesh-helper-start"]


RULES_HARNESS = r"""
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: null}, addRule: (f) => rules.push(f)};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const out = JSON.parse(process.argv[2]).map(([id, unit, verb, groups, local, active]) => {
  const action = {id: id, lookup: (k) => ({unit: unit, verb: verb})[k]};
  const subject = {isInGroup: (g) => groups.includes(g), local: local, active: active};
  for (const r of rules) { const v = r(action, subject); if (v) return v; }
  return null;
});
console.log(JSON.stringify(out));
"""


def test_rules_allow_only_start_stop_restart_of_our_unit_for_the_group():
    if shutil.which("node") is None:
        pytest.skip("node (to evaluate the polkit rules) is not installed")
    m = "org.freedesktop.systemd1.manage-units"
    cases = [
        ([m, "mesh-helper.service", "start", ["meshvpn"], True, True], "yes"),
        ([m, "mesh-helper.service", "stop", ["meshvpn"], True, True], "yes"),
        ([m, "mesh-helper.service", "restart", ["meshvpn"], True, True], "yes"),
        ([m, "mesh-helper.service", "enable", ["meshvpn"], True, True], None),
        ([m, "mesh-helper.service", "reload-or-restart", ["meshvpn"], True, True], None),
        ([m, "ssh.service", "start", ["meshvpn"], True, True], None),
        ([m, "mesh-helper.service", "start", ["users"], True, True], None),
        ([m, "mesh-helper.service", "start", ["meshvpn"], False, True], None),  # ssh session
        ([m, "mesh-helper.service", "start", ["meshvpn"], True, False], None),  # inactive session
        (["org.freedesktop.systemd1.manage-unit-files", "mesh-helper.service", "start", ["meshvpn"], True, True], None),
    ]
    r = subprocess.run(
        ["node", "-e", RULES_HARNESS, str(RULES), json.dumps([c for c, _ in cases])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [want for _, want in cases]
