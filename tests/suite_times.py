#!/usr/bin/env python3
"""Runs the whole suite several times and prints each test's slowest time against its timeout.

    /usr/bin/python3 tests/suite_times.py BUILD_DIR [--runs R] [--busy P] [--keep DIR]

Each run is `meson test -C BUILD_DIR --no-rebuild --num-processes 2`, as `./run.sh test` runs it
(OMP_WAIT_POLICY=passive unless set). meson gives every test its own random MALLOC_PERTURB_
(glibc then fills what malloc hands out and what free takes back), so R runs are R draws of it;
the value each test ran with is read back from meson's test log. --busy P starts P processes that
spin for the length of each run (a competing busy machine). The table: per test, the slowest and
median time over the runs, the MALLOC_PERTURB_ of the slowest, the timeout, and the slowest as a
share of the timeout; the script exits 1 if any run failed.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time


def spin():
    while True:
        pass


def timeouts(build):
    out = subprocess.run(["meson", "introspect", "--tests", build], check=True,
                         capture_output=True, text=True).stdout
    return {t["name"]: t["timeout"] for t in json.loads(out)}


def run_once(build, busy):
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    env.setdefault("OMP_NUM_THREADS", "2")
    log = os.path.join(build, "meson-logs", "testlog.json")
    if os.path.exists(log):
        os.remove(log)
    start = time.monotonic()
    status = subprocess.run(["meson", "test", "-C", build, "--no-rebuild", "--num-processes", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.monotonic() - start
    for p in spinners:
        p.terminate()
    records = [json.loads(line) for line in open(log) if line.strip()]
    return status, wall, records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--busy", type=int, default=0, help="spinning processes beside each run")
    ap.add_argument("--keep", help="copy each run's testlog.json into this directory")
    args = ap.parse_args()

    limit = timeouts(args.build)
    times = {}
    failed = 0
    for r in range(args.runs):
        status, wall, records = run_once(args.build, args.busy)
        bad = [t["name"] for t in records if t["result"] not in ("OK", "EXPECTEDFAIL", "SKIP")]
        failed += status != 0 or bool(bad)
        print(f"run {r + 1}/{args.runs}: {wall:.0f} s wall, {len(records)} tests, "
              f"failed: {', '.join(bad) or 'none'}", flush=True)
        for t in records:
            perturb = t.get("env", {}).get("MALLOC_PERTURB_", "-")
            times.setdefault(t["name"], []).append((t["duration"], perturb, t["result"]))
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(os.path.join(args.build, "meson-logs", "testlog.json"),
                        os.path.join(args.keep, f"testlog.{r + 1}.json"))

    print(f"\n{'test':<14}{'slowest s':>10}{'median s':>10}{'perturb':>9}{'timeout s':>11}{'share':>8}")
    for name, runs in sorted(times.items(), key=lambda kv: -max(d for d, _, _ in kv[1]) / limit.get(kv[0], 30)):
        slow = max(runs)
        to = limit.get(name, 30)
        print(f"{name:<14}{slow[0]:>10.2f}{statistics.median(d for d, _, _ in runs):>10.2f}"
              f"{slow[1]:>9}{to:>11}{slow[0] / to:>8.0%}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
