"""Long-run fuzz driver: mutates each target's seed corpus; reports inputs tried, inputs/s and findings per target."""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SLOW_SECONDS = 1.0  # an input taking longer than this is reported as a (possible) hang


def _signature(e: BaseException) -> str:
    """Exception type + the innermost frame in product code: one finding per distinct crash site."""
    tb = traceback.extract_tb(e.__traceback__)
    frames = [f for f in tb if "/engine/" in f.filename] or tb
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(e).__name__} at {where}"


def run_target(name: str, seconds: float | None, inputs: int | None, seed: int, outdir: str) -> dict:
    from tests.fuzz.mutate import mutate
    from tests.fuzz.targets import TARGETS, corpus

    t = TARGETS[name]
    seeds = corpus(name)
    rnd = random.Random(seed)
    findings: dict[str, str] = {}
    slow = 0
    n = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else None
    pool = list(seeds)  # seeds, plus inputs that produced findings (mutated further)
    while True:
        if inputs is not None and n >= inputs:
            break
        if deadline is not None and (n & 63) == 0 and time.perf_counter() >= deadline:
            break
        base = rnd.choice(pool)
        data = base if n < len(seeds) else mutate(rnd, base, seeds, t.max_len)
        n += 1
        t0 = time.perf_counter()
        try:
            t.fn(data)
        except Exception as e:  # noqa: BLE001 - every escaping exception is a finding
            sig = _signature(e)
            if sig not in findings:
                path = Path(outdir) / f"{name}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
                path.write_bytes(data)
                findings[sig] = str(path)
                print(f"[{name}] FINDING {sig}: {str(e)[:160]!r} -> reproducer {path}", flush=True)
        dt = time.perf_counter() - t0
        if dt > SLOW_SECONDS:
            slow += 1
            if slow <= 3:
                path = Path(outdir) / f"{name}-slow-{hashlib.sha1(data).hexdigest()[:12]}.bin"
                path.write_bytes(data)
                print(f"[{name}] SLOW input: {dt:.2f} s -> {path}", flush=True)
    elapsed = time.perf_counter() - start
    return {
        "target": name,
        "inputs": n,
        "seconds": elapsed,
        "rate": n / elapsed if elapsed else 0.0,
        "findings": findings,
        "slow": slow,
    }


def _run(args: tuple) -> dict:
    return run_target(*args)


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz.targets import TARGETS

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="only this target (repeatable)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seconds", type=float, help="total wall-clock budget, split evenly over the targets (default 60)")
    g.add_argument("--inputs", type=int, help="inputs per target")
    ap.add_argument("--jobs", type=int, default=1, help="targets run in parallel (processes)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time-based; printed)")
    ap.add_argument("--out", default=None, help="directory for reproducers (default: a new temp dir)")
    a = ap.parse_args(argv)
    names = a.target or list(TARGETS)
    seed = a.seed if a.seed is not None else int(time.time())
    outdir = a.out or tempfile.mkdtemp(prefix="meshvpn-fuzz-findings-")
    os.makedirs(outdir, exist_ok=True)
    per = None
    if a.inputs is None:
        total = a.seconds if a.seconds is not None else 60.0
        per = total * max(1, a.jobs) / len(names)
    print(
        f"fuzz: {len(names)} target(s), seed {seed}, "
        f"{f'{a.inputs} inputs' if a.inputs else f'{per:.1f} s'} each, {a.jobs} job(s); reproducers in {outdir}",
        flush=True,
    )
    work = [(n, per, a.inputs, seed + i, outdir) for i, n in enumerate(names)]
    if a.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(a.jobs) as pool:
            results = pool.map(_run, work, chunksize=1)
    else:
        results = [_run(w) for w in work]
    print(f"\n{'target':<20} {'inputs':>11} {'inputs/s':>10} {'slow':>5}  findings")
    total_inputs = 0
    bad = 0
    for r in results:
        total_inputs += r["inputs"]
        bad += len(r["findings"])
        f = "; ".join(f"{k} ({v})" for k, v in r["findings"].items()) or "none"
        print(f"{r['target']:<20} {r['inputs']:>11,} {r['rate']:>10,.0f} {r['slow']:>5}  {f}")
    print(f"{'total':<20} {total_inputs:>11,}   findings: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
