"""The .deb and PyInstaller bundle: contents/modes, bundled programs run bare, maintainer scripts in a scratch root."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.packaging.conftest import PREFIX, ROOT, Built, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROGRAMS_CLI = ("mesh-helper", "meshctl")
UNIT = "usr/lib/systemd/system/mesh-helper.service"
POLICY = "usr/share/polkit-1/actions/org.meshvpn.helper.policy"
RULES = "usr/share/polkit-1/rules.d/50-meshvpn.rules"
WRAPPER = "usr/libexec/meshvpn/mesh-helper-start"
DESKTOP = "usr/share/applications/meshgui.desktop"
ICON = "usr/share/icons/hicolor/scalable/apps/meshvpn.svg"
ALLOWED_TOP = (
    "opt/meshvpn/",
    "usr/bin/",
    "usr/lib/systemd/system/",
    "usr/share/applications/",
    "usr/share/icons/hicolor/",
    "usr/share/polkit-1/actions/",
    "usr/share/polkit-1/rules.d/",
    "usr/libexec/meshvpn/",
    "usr/share/doc/meshvpn/",
)
EXIT_NO_HELPER = 3  # engine/cli/meshctl.py: "3 helper not running"


def programs(b: Built) -> tuple[str, ...]:
    return PROGRAMS_CLI + (("meshgui",) if b.with_gui else ())


def run(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kw)


def field(b: Built, name: str) -> str:
    return run(["dpkg-deb", "--field", b.deb, name]).stdout.strip()


def depends(b: Built) -> set[str]:
    names = set()
    for alt in re.split(r"[,|]", field(b, "Depends")):
        names.add(re.sub(r"\(.*?\)", "", alt).strip())
    return names


def contents(b: Built) -> dict[str, tuple[str, str, str]]:
    """path (no leading ./) -> (mode string, owner/group, symlink target or "")."""
    out = {}
    for line in run(["dpkg-deb", "--contents", b.deb]).stdout.splitlines():
        parts = line.split(None, 5)
        mode, owner, name = parts[0], parts[1], parts[5]
        target = ""
        if " -> " in name:
            name, target = name.split(" -> ", 1)
        out[name.removeprefix("./").rstrip("/")] = (mode, owner, target)
    return out


# ---------------------------------------------------------------- package metadata and contents


def test_control_fields(built):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert field(built, "Package") == "meshvpn"
    assert field(built, "Version") == version
    assert field(built, "Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
    deps = depends(built)
    assert {"iproute2", "nftables", "iputils-ping", "libc6"} <= deps
    if built.with_gui:
        assert {"libxcb-cursor0", "libxkbcommon-x11-0", "libegl1", "libdbus-1-3"} <= deps
    info = run(["dpkg-deb", "--info", built.deb]).stdout
    for script in ("postinst", "prerm", "postrm"):
        # dpkg-deb marks executable control members with "*".
        assert re.search(rf"\*\s+{script}\s", info), info


def test_contents_and_modes(built):
    c = contents(built)
    for path, (mode, owner, _) in c.items():
        assert owner == "root/root", (path, owner)
        assert mode[8] != "w" or mode[0] == "l", f"{path} is world-writable: {mode}"
        assert path == "" or path.startswith(ALLOWED_TOP) or any(a.startswith(path + "/") for a in ALLOWED_TOP), path
        if mode[0] == "d":
            assert mode == "drwxr-xr-x", (path, mode)
        if mode[0] == "-" and ".so" in path.rsplit("/", 1)[-1]:
            assert mode == "-rw-r--r--", (path, mode)
    for prog in programs(built):
        assert c[f"{PREFIX}/{prog}"][0] == "-rwxr-xr-x"
        assert c[f"usr/bin/{prog}"][0][0] == "l" and c[f"usr/bin/{prog}"][2] == f"/{PREFIX}/{prog}"
    for path in (UNIT, POLICY, RULES, "usr/share/doc/meshvpn/copyright"):
        assert c[path][0] == "-rw-r--r--", path
    assert c[WRAPPER][0] == "-rwxr-xr-x"
    if built.with_gui:
        assert c[DESKTOP][0] == "-rw-r--r--"
        assert c[ICON][0] == "-rw-r--r--"
    # Run-at-login is the user's opt-in (the tray app writes ~/.config/autostart); none system-wide.
    assert not any(p.startswith("etc/") for p in c)
    # Only the shared _internal/ of the three programs.
    assert sorted(p.split("/")[2] for p in c if p.startswith(f"{PREFIX}/") and p.count("/") == 2) == sorted(
        [*programs(built), "_internal"]
    )


def test_unit_and_policy_point_at_the_bundle(built):
    unit = (built.tree / UNIT).read_text()
    assert f"\nExecStart=/{PREFIX}/mesh-helper serve " in unit
    assert f"\nExecStopPost=/{PREFIX}/mesh-helper serve --cleanup-only" in unit
    assert "\nEnvironment=MESH_OPERATOR=:meshvpn\n" in unit
    # Everything else is the resource as written.
    original = (ROOT / "resources/systemd/mesh-helper.service").read_text()
    assert (
        unit.replace(f"/{PREFIX}/mesh-helper", "/usr/bin/mesh-helper").replace(
            "MESH_OPERATOR=:meshvpn", "MESH_OPERATOR="
        )
        == original
    )
    # pkexec may run only the argument-less wrapper, with the admin password every time.
    policy = (built.tree / POLICY).read_text()
    assert f'<annotate key="org.freedesktop.policykit.exec.path">/{WRAPPER}</annotate>' in policy
    assert re.findall(r'<action id="([^"]+)"', policy) == ["org.meshvpn.helper.start"]
    assert "auth_admin_keep" not in policy and "mesh-helper<" not in policy
    wrapper = (built.tree / WRAPPER).read_text()
    assert f"\n    /{PREFIX}/mesh-helper serve --socket /run/meshvpn/meshvpn.sock --prefs " in wrapper
    assert "$@" not in wrapper and "$1" not in wrapper
    assert wrapper == (ROOT / "resources/polkit/mesh-helper-start").read_text().replace(
        "/usr/bin/mesh-helper", f"/{PREFIX}/mesh-helper"
    )
    # systemd route: the meshvpn group may start/stop/restart this one unit, nothing else.
    assert (built.tree / RULES).read_text() == (ROOT / "resources/polkit/50-meshvpn.rules").read_text()
    if built.with_gui:
        desktop = (built.tree / DESKTOP).read_text()
        assert re.search(r"^Exec=meshgui\b", desktop, re.M) and re.search(r"^Icon=meshvpn$", desktop, re.M)


def _elf_files(bundle: pathlib.Path) -> list[pathlib.Path]:
    files = []
    for p in bundle.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    files.append(p)
    return files


def _owning_package(soname: str, ldcache: str) -> str | None:
    """The Debian package holding the library the dynamic loader would pick for soname."""
    host_tag = "x86-64" if os.uname().machine == "x86_64" else ""
    for line in ldcache.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)$", line)
        if not m or m.group(1) != soname or (host_tag and host_tag not in m.group(2)):
            continue
        path = m.group(3)
        candidates = [path, os.path.realpath(path)]
        candidates += [c[4:] if c.startswith("/usr/lib/") else "/usr" + c for c in list(candidates)]  # merged /usr
        for c in candidates:
            r = run(["dpkg", "-S", c])
            if r.returncode == 0:
                return r.stdout.split(":")[0].strip()
    return None


def test_every_system_library_is_a_dependency(built):
    """The bundle links host libraries only through packages the .deb depends on."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    elves = _elf_files(built.bundle)
    bundled = {p.name for p in built.bundle.rglob("*.so*")}
    needed: set[str] = set()
    for f in elves:
        for line in run(["readelf", "-d", f]).stdout.splitlines():
            m = re.search(r"\(NEEDED\).*\[(.+)\]", line)
            if m and m.group(1) not in bundled:
                needed.add(m.group(1))
    deps = depends(built)
    ldcache = run(["ldconfig", "-p"]).stdout
    missing = {}
    for soname in sorted(needed):
        pkg = _owning_package(soname, ldcache)
        if pkg is None or pkg not in deps:
            missing[soname] = pkg
    assert not missing, f"system libraries not covered by Depends: {missing}"


def test_bundle_holds_no_desktop_stack_from_the_build_host(built):
    """X11/GTK/GLib/fontconfig come from the target system (Depends), never from the build machine."""
    names = {p.name for p in (built.bundle / "_internal").iterdir()}
    forbidden = [
        n
        for n in names
        if re.match(
            r"lib(X11|xcb|xkbcommon|gtk|gdk|glib|gobject|gio|cairo|pango|"
            r"fontconfig|freetype|harfbuzz|dbus|systemd|stdc\+\+|gcc_s)",
            n,
        )
    ]
    assert not forbidden, forbidden


# ---------------------------------------------------------------- the bundled programs, no venv


def test_meshctl_version_runs_bare(built):
    r = run([built.bundle / "meshctl", "version"], env=clean_env(MESHVPN_SOCKET="/nonexistent/meshvpn.sock"))
    assert r.returncode == 0, r.stderr
    assert re.match(r"meshctl \S+\nhelper\s+\(not running\)\n$", r.stdout), r.stdout


def test_meshctl_status_without_helper(built, tmp_path):
    sock = tmp_path / "nobody-listens.sock"
    r = run([built.bundle / "meshctl", "status"], env=clean_env(MESHVPN_SOCKET=str(sock)))
    assert r.returncode == EXIT_NO_HELPER, (r.returncode, r.stdout, r.stderr)
    assert "helper is not running" in r.stderr and "systemctl start mesh-helper" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_meshctl_through_a_symlink(built, tmp_path):
    """/usr/bin/meshctl is a symlink into /opt/meshvpn: the bootloader must find _internal/ anyway."""
    link = tmp_path / "bin" / "meshctl"
    link.parent.mkdir()
    link.symlink_to(built.bundle / "meshctl")
    r = run([link, "--help"])
    assert r.returncode == 0 and "usage: meshctl" in r.stdout, r.stderr


def test_helper_serve_help_runs_bare(built):
    r = run([built.bundle / "mesh-helper", "serve", "--help"])
    assert r.returncode == 0, r.stderr
    assert "usage: mesh-helper serve" in r.stdout and "--cleanup-only" in r.stdout


def _gui(built: Built) -> None:
    if not built.with_gui:
        pytest.skip("meshgui/PySide6 not available: the bundle was built without the GUI")


def test_meshgui_help_runs_bare(built):
    _gui(built)
    r = run([built.bundle / "meshgui", "--help"], env=clean_env(QT_QPA_PLATFORM="offscreen"))
    assert r.returncode == 0, r.stderr
    assert "usage: meshgui" in r.stdout


def test_meshgui_starts_offscreen(built, tmp_path):
    """The frozen Qt app finds its platform plugins, builds its window and quits on its own."""
    _gui(built)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = clean_env(
        QT_QPA_PLATFORM="offscreen",
        HOME=str(home),
        XDG_RUNTIME_DIR=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        MESHVPN_SOCKET=str(tmp_path / "none.sock"),
    )
    r = run(
        [
            built.bundle / "meshgui",
            "--no-supervise",
            "--no-keyring",
            "--show",
            "--exit-after",
            "1.5",
            "--instance",
            f"pkgtest-{os.getpid()}",
            "--settings",
            home / "meshgui.conf",
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "Could not load the Qt platform plugin" not in r.stderr
    assert "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------- maintainer scripts, never on this machine


def _throwaway_root(path: pathlib.Path) -> pathlib.Path:
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
        (path / d).mkdir(parents=True)
    (path / "var/lib/dpkg/status").write_text("")
    (path / "etc/group").write_text("root:x:0:\n")
    (path / "etc/gshadow").write_text("root:*::\n")
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return path


def _dpkg(root: pathlib.Path, *args) -> subprocess.CompletedProcess:
    # --force-script-chrootless: scripts run here with DPKG_ROOT=root (no chroot, no systemd);
    # --log keeps dpkg's log inside the throwaway root.
    return run(
        [
            "dpkg",
            f"--root={root}",
            f"--log={root}/dpkg.log",
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            *args,
        ],
        env=clean_env(),
    )


def test_install_and_purge_in_a_throwaway_root(built, tmp_path):
    if shutil.which("groupadd") is None:
        pytest.skip("groupadd (passwd) is not installed")
    host_group = pathlib.Path("/etc/group").read_text()
    root = _throwaway_root(tmp_path / "root")

    r = _dpkg(root, "-i", built.deb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Setting up meshvpn" in r.stdout
    assert re.search(r"^meshvpn:x:\d+:$", (root / "etc/group").read_text(), re.M)
    wants = root / "etc/systemd/system/multi-user.target.wants/mesh-helper.service"
    assert wants.is_symlink()  # enabled offline: starts on the next boot of that root
    assert (root / PREFIX / "meshctl").is_file() and (root / UNIT).is_file()

    # Upgrade in place (same version): the postinst upgrade path, still no systemd.
    r = _dpkg(root, "-i", built.deb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wants.is_symlink()

    # Remove (not purge): programs and unit link go, prefs stay; reinstalling enables the helper again.
    r = _dpkg(root, "--remove", "meshvpn")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not wants.is_symlink() and not (root / PREFIX / "meshctl").exists()
    r = _dpkg(root, "-i", built.deb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wants.is_symlink()
    assert not (root / "var/lib/meshvpn/.enabled-before-remove").exists()

    (root / "var/lib/meshvpn").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/meshvpn/prefs.json").write_text("{}")
    (root / "var/cache/meshvpn").mkdir(parents=True)
    r = _dpkg(root, "--purge", "meshvpn")
    assert r.returncode == 0, r.stdout + r.stderr

    left = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir()
        and not str(p.relative_to(root)).startswith("var/lib/dpkg/")
        and p.name not in ("group-", "gshadow-", "dpkg.log")
    )
    assert left == ["etc/group", "etc/gshadow", "etc/passwd"], left
    assert "meshvpn" not in (root / "etc/group").read_text()
    assert not (root / "opt").exists() or not any((root / "opt").rglob("*"))
    assert pathlib.Path("/etc/group").read_text() == host_group  # this machine was never touched


def _control_scripts(built: Built, dest: pathlib.Path) -> pathlib.Path:
    subprocess.run(["dpkg-deb", "-e", str(built.deb), str(dest)], check=True)
    return dest


FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
case "$(basename "$0")" in getent) exit 2 ;; esac
exit 0
"""


def test_scripts_with_systemd_running(built, tmp_path):
    """With systemd as init (simulated: /run/systemd/system in a private mount namespace, recording fakes
    for systemctl and the group tools), a fresh install enables and starts the helper, an upgrade
    restarts it, removal stops and disables it."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private mount namespace")
    ctl = _control_scripts(built, tmp_path / "control")
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    for tool in ("systemctl", "getent", "addgroup", "groupadd", "delgroup", "groupdel"):
        (fakebin / tool).write_text(FAKE)
        (fakebin / tool).chmod(0o755)
    log = tmp_path / "calls.log"

    def script(*argv: str) -> list[str]:
        log.write_text("")
        # tmpfs over /run, /var/lib and /etc/systemd/system only inside the new mount namespace: the
        # machine's own runtime dirs, state and unit links are never touched.
        inner = (
            "mount -t tmpfs meshvpn-test /run && mkdir -p /run/systemd/system && "
            "mount -t tmpfs meshvpn-test /var/lib && "
            '{ [ ! -d /etc/systemd/system ] || mount -t tmpfs meshvpn-test /etc/systemd/system; } && exec "$@"'
        )
        r = run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh", "sh", *argv],
            env=clean_env(PATH=f"{fakebin}:/usr/sbin:/usr/bin:/sbin:/bin", FAKE_LOG=str(log)),
        )
        if r.returncode != 0 and "unshare failed" in r.stderr:
            pytest.skip(f"cannot create a mount namespace here: {r.stderr.strip()}")
        assert r.returncode == 0, (argv, r.stderr)
        return log.read_text().splitlines()

    calls = script(str(ctl / "postinst"), "configure", "")
    assert "addgroup --system --quiet meshvpn" in calls, calls
    assert calls.index("systemctl daemon-reload") < calls.index("systemctl enable --now mesh-helper.service"), calls

    calls = script(str(ctl / "postinst"), "configure", "0.0.9")
    assert "systemctl try-restart mesh-helper.service" in calls and not any("enable" in c for c in calls), calls

    calls = script(str(ctl / "prerm"), "upgrade", "0.1.1")
    assert not any(c.startswith("systemctl") for c in calls), calls

    calls = script(str(ctl / "prerm"), "remove")
    assert "systemctl disable --now mesh-helper.service" in calls, calls
    assert calls.index("systemctl --root=/ is-enabled --quiet mesh-helper.service") < calls.index(
        "systemctl disable --now mesh-helper.service"
    ), calls

    calls = script(str(ctl / "postrm"), "remove")
    assert "systemctl daemon-reload" in calls, calls


def test_build_time_and_sizes(built, artifacts_dir):
    """Not a timed assertion (generous bound only): records the figures for the report."""
    bundle_bytes = sum(p.lstat().st_size for p in built.bundle.rglob("*") if p.is_file() and not p.is_symlink())
    deb_bytes = built.deb.stat().st_size
    (artifacts_dir / "packaging-sizes.txt").write_text(
        f"build (bundle + deb): {built.seconds:.0f}s\nbundle: {bundle_bytes / 2**20:.1f} MiB\n"
        f".deb: {deb_bytes / 2**20:.1f} MiB\ngui: {built.with_gui}\n"
    )
    assert built.seconds < 900


def test_meshgui_keeps_keys_in_the_keyring(built, tmp_path):
    """The frozen app finds keyring's Secret Service backend (entry points survive bundling) and stores
    the device keys there: a private session bus with gnome-keyring, then the venv's keyring reads back."""
    _gui(built)
    if not (shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon")):
        pytest.skip("dbus-run-session / gnome-keyring-daemon not installed")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = clean_env(
        QT_QPA_PLATFORM="offscreen",
        HOME=str(home),
        XDG_RUNTIME_DIR=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        MESHVPN_SOCKET=str(tmp_path / "none.sock"),
    )
    # The checking interpreter is the dev venv (it has keyrings.alt, so its default is a
    # chainer): read through the Secret Service backend inside it, as the GUI does.
    check = (
        "import keyring; k = keyring.get_keyring(); "
        "k = next((b for b in getattr(k, 'backends', [k]) "
        "if type(b).__module__ == 'keyring.backends.SecretService'), k); "
        "print(type(k).__module__, all(k.get_password('meshvpn', e) for e in "
        "('machine-private-key', 'node-private-key')))"
    )  # booleans only: keys never reach the output
    inner = (
        "echo -n test | gnome-keyring-daemon --unlock --components=secrets >/dev/null && "
        '"$1" --no-supervise --exit-after 2.5 --instance "$2" --settings "$3" && "$4" -c "$5"'
    )
    r = run(
        [
            "dbus-run-session",
            "--",
            "sh",
            "-c",
            inner,
            "sh",
            built.bundle / "meshgui",
            f"pkgkr-{os.getpid()}",
            home / "meshgui.conf",
            sys.executable,
            check,
        ],
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "keyring.backends.SecretService True", r.stdout
