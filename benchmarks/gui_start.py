"""GUI benchmark: cold start to tray icon shown (Xvfb + trayer), RSS at 1,000 peers, time to apply a 1,000-peer update.

    .venv/bin/python benchmarks/gui_start.py [--runs 5] [--peers 1000] [--json test-artifacts/gui_start.json]

1. Cold start: spawn `python -m meshgui` on a private Xvfb with trayer, against a LocalAPI
   serving `--peers` peers (the GUI tests' fake helper); measure spawn → "tray icon shown"
   (QSystemTrayIcon.show() returned) and spawn → icon embedded in trayer (X window mapped
   into the panel), median of --runs.
2. RSS: VmRSS / VmHWM of that process once the peer table holds all peers (window shown).
3. Update: in-process (offscreen Qt), the whole path of one /status answer with N peers:
   JSON decode through engine.localapi.schema (as the client does), reduce(), PeerModel
   diff, tray menu spec + in-place update, window apply. Initial fill and a typical update
   (10 % of peers changed counters, 1 % went offline), median of 20.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gui.builders import direct, exit_option, offline, peer, status  # noqa: E402
from tests.gui.fake_localapi import FakeLocalAPI  # noqa: E402
from tests.gui.xsession import XSession  # noqa: E402


def make_peers(n: int):
    out = []
    for i in range(n):
        mods = []
        if i % 3 == 0:
            mods.append(direct(f"192.0.2.{i % 250 + 1}:41641"))
        if i % 50 == 0:
            mods.append(exit_option)
        if i % 17 == 0:
            mods.append(offline)
        out.append(peer(i, *mods))
    return out


def rss_kib(pid: int) -> tuple[int, int]:
    vals = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def cold_start(runs: int, n_peers: int) -> dict:
    shown, embedded, rss, hwm = [], [], [], []
    for run in range(runs):
        with (
            tempfile.TemporaryDirectory() as tmp,
            FakeLocalAPI(f"{tmp}/helper.sock", backend="Running", peers=make_peers(n_peers)) as fake,
            XSession(tray=True) as x,
        ):
            env = dict(x.env, HOME=tmp, XDG_RUNTIME_DIR=tmp, XDG_CONFIG_HOME=f"{tmp}/config", PYTHONPATH=str(ROOT))
            log = pathlib.Path(tmp) / "gui.log"
            with open(log, "wb") as lf:
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "meshgui",
                        "--socket",
                        f"{tmp}/helper.sock",
                        "--no-supervise",
                        "--no-keyring",
                        "--log-level",
                        "INFO",
                        "--instance",
                        f"bench-{run}",
                        "--show",
                        "--settings",
                        f"{tmp}/gui.ini",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=lf,
                    stderr=subprocess.STDOUT,
                )
                try:
                    t_shown = t_embed = None
                    deadline = t0 + 60
                    while (t_shown is None or t_embed is None) and time.monotonic() < deadline:
                        now = time.monotonic()
                        if t_shown is None and "tray icon shown" in log.read_text(errors="replace"):
                            t_shown = now - t0
                        if t_embed is None and x.tray_geometry()[2] >= 16:
                            t_embed = now - t0
                        time.sleep(0.005)
                    shown.append(t_shown)
                    embedded.append(t_embed)
                    # RSS once the full peer list has been fetched and shown
                    XSession.wait_for(lambda: fake.requests.count(("GET", "/localapi/v0/status")) >= 1, "status")
                    time.sleep(2.0)
                    r, h = rss_kib(proc.pid)
                    rss.append(r)
                    hwm.append(h)
                finally:
                    proc.terminate()
                    proc.wait(15)
    return {
        "runs": runs,
        "peers": n_peers,
        "start_to_tray_shown_s_median": statistics.median(shown),
        "start_to_icon_embedded_s_median": statistics.median(embedded),
        "start_to_tray_shown_s_all": shown,
        "start_to_icon_embedded_s_all": embedded,
        "rss_mib_median": statistics.median(rss) / 1024,
        "rss_hwm_mib_median": statistics.median(hwm) / 1024,
    }


def update_path(n_peers: int, reps: int = 20) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import datetime as dt

    from PySide6.QtWidgets import QApplication

    from engine.localapi.schema import Status
    from meshgui import state as st
    from meshgui.tray import Tray
    from meshgui.window import MainWindow

    app = QApplication.instance() or QApplication([])
    now = dt.datetime.now(dt.timezone.utc)
    clock = lambda: now  # noqa: E731
    peers = make_peers(n_peers)
    first = json.dumps(status("Running", peers)).encode()
    changed = []
    for i, (k, p) in enumerate(peers):
        p = dict(p)
        if i % 10 == 0:
            p["RxBytes"] = 1000 + i
            p["TxBytes"] = 2000 + i
        if i % 100 == 5:
            p["Online"] = False
        changed.append((k, p))
    second = json.dumps(status("Running", changed)).encode()

    def one(payload: bytes, base: st.ViewState, tray: Tray, win: MainWindow) -> tuple[float, float, st.ViewState]:
        t0 = time.perf_counter()
        d = Status.from_json(payload).to_dict()
        t1 = time.perf_counter()
        v = st.reduce(base, st.StatusEvent(d), now)
        win.apply(v)
        tray.apply(v)
        app.processEvents()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, v

    fills, updates, decodes = [], [], []
    for _ in range(reps):
        tray, win = Tray(clock=clock), MainWindow(clock=clock)
        win.show()
        dec, gui, v = one(first, st.ViewState(), tray, win)
        fills.append(dec + gui)
        dec2, gui2, _ = one(second, v, tray, win)
        updates.append(dec2 + gui2)
        decodes.append(dec2)
        win.close()
        win.deleteLater()
        tray.deleteLater()
        app.processEvents()
    return {
        "peers": n_peers,
        "reps": reps,
        "initial_fill_ms_median": statistics.median(fills) * 1000,
        "update_ms_median": statistics.median(updates) * 1000,
        "of_which_schema_decode_ms_median": statistics.median(decodes) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--json", default=str(ROOT / "test-artifacts" / "gui_start.json"))
    ap.add_argument("--skip-start", action="store_true", help="only the in-process update measurement")
    args = ap.parse_args()
    result = {"update": update_path(args.peers)}
    if not args.skip_start:
        result["cold_start"] = cold_start(args.runs, args.peers)
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
