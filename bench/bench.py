"""bench.py: cmlab against PyTorch on every workload users wait for, one table (./run.sh bench).

Runs, interleaved, REPS times each row: cmlab (bench_train, whose timed iterations alternate
between 2 threads and 1, so that the machine's drift affects both alike; `cmlab eval` for the
eval row) and its PyTorch 1.13 twin (bench_train.py, bench_eval.py; 2 threads) in four
configurations, batch 64 and 256, each contiguous and channels_last. The ratio is taken against
PyTorch's fastest configuration of the row (its median img/s), which the table names. Each run is
its own process, so its peak RSS is that workload's alone. OpenBLAS's sgemm peak (bench_sgemm,
2 threads) is measured before and after, and the better of the two is the peak. Both sides get
OMP_NUM_THREADS and OPENBLAS_CORETYPE (cmlab picks SkylakeX on this CPU: tensor.h,
cm_blas_select_core).

Rows ending in -bf16 run the network's products in bf16 (issue 19): cmlab's bench_train
--precision bf16 against bench_train.py --bf16 (PyTorch's torch.autocast("cpu", dtype=torch.bfloat16),
in the same four configurations); their work column says bf16, and a second table sets each beside
its fp32 row when both ran (cmlab bf16 / fp32, PyTorch bf16 / fp32, cmlab bf16 / PyTorch bf16).
PyTorch 1.13 sends a bf16 matmul to oneDNN only when m n k >= 16^3 (smaller ones take a slower
fallback that rounds partial sums to bf16). A CPU without AVX512_BF16 fails the bf16 rows' cmlab runs.

--contended measures each row a second time while a busy process (a Python spin loop pinned to
the last core by taskset) runs, and prints both sides' idle and contended img/s (default rows:
S-train and S-sample). There cmlab runs with no thread count given (no OMP_NUM_THREADS,
bench_train --threads 0,1; `cmlab eval` without --threads, whose record says threads 0), as a
user runs it, so that its rule may leave the spin loop its core; PyTorch runs 2 threads.
--cmlab-env VAR=VALUE (repeatable) sets a variable for cmlab's processes only, e.g.
OMP_WAIT_POLICY=passive or GOMP_SPINCOUNT=10000 to time a waiting policy. cmlab's processes
(bench_train and `cmlab eval`) pick their waiting policy as every cmlab command does
(src/autograd/threads.h), with CMLAB_WAIT_RULE=spin unless --cmlab-env says otherwise, so that
the idle rows are libgomp's default; --cmlab-env CMLAB_WAIT_RULE=busy times what a user gets,
the default rule deciding at each process's start (spinning idle, passive beside the spin loop).

Usage: /usr/bin/python3 bench/bench.py BUILD_DIR [--reps R] [--quick] [--only S-train,S-heun64,...]
       [--contended] [--cmlab-env VAR=VALUE ...]
Prints the table (medians over repetitions of each run's median step time), the per-repetition
ranges of both ratios (and of 2 vs 1 thread from each process's fastest iterations, where the
host's noise weighs least), and the raw lines.
"""
import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.environ.get("TORCH_PYTHON", "/usr/bin/python3")
sys.path.insert(0, HERE)

import bench_eval  # noqa: E402

# name: (config, bench_train mode, cmlab's batch, warm-up, timed iterations per process, what).
# cmlab's sampling rows take the network batch its commands run (`cmlab sample`, `cmlab eval`:
# model_sampler's 64; on the Xeon of 2026-12-07 also its fastest: S 1130 img/s at 32 and 64, 1030
# at 128, 1004 at 256); PyTorch runs at 64 and 256 regardless.
# The Heun rows take one iteration, no warm-up: 35 network calls warm up within the iteration.
ROWS = {
    "S-train": ("S", "train", 64, 2, 5, "CT train step"),
    "S-sample": ("S", "sample", 64, 2, 10, "1-step sample"),
    "M-train": ("M", "train", 64, 1, 3, "CT train step"),
    "M-sample": ("M", "sample", 64, 1, 5, "1-step sample"),
    "S-heun64": ("S", "heun", 64, 0, 1, "EDM Heun 35 NFE"),
    "S-heun256": ("S", "heun", 256, 0, 1, "EDM Heun 35 NFE"),
    "M-heun64": ("M", "heun", 64, 0, 1, "EDM Heun 35 NFE"),
    "M-heun256": ("M", "heun", 256, 0, 1, "EDM Heun 35 NFE"),
    "S-bcm-train": ("S", "bcm-train", 64, 1, 3, "BCM train step"),
    "S-bcm-sample": ("S", "bcm-sample", 64, 2, 6, "BCM 2-step sample"),
    "S-amed-teacher": ("S", "amed-teacher", 128, 0, 2, "AMED teacher, Heun 12 NFE"),
    "S-amed-train": ("S", "amed-train", 128, 1, 3, "AMED predictor, 3 substeps"),
    "S-eval": ("S", "eval", bench_eval.N, 0, 1, "eval: 1-step sample + features"),
}
# bf16 rows: the fp32 row each repeats with bf16 products (cmlab --precision bf16, PyTorch autocast).
BF16 = {"S-sample-bf16": "S-sample", "M-sample-bf16": "M-sample", "S-heun64-bf16": "S-heun64",
        "S-train-bf16": "S-train"}
ROWS.update({b: ROWS[f][:5] + (ROWS[f][5] + ", bf16",) for b, f in BF16.items()})
# The M Heun rows take an estimated 10 minutes a repetition (PyTorch at batch 256, from the M sampling
# rates in README): only with --only M-heun64,M-heun256.
DEFAULT = [r for r in ROWS if not r.startswith("M-heun")]
CONTENDED_DEFAULT = ["S-train", "S-sample"]
# PyTorch's configurations: (batch, channels_last)
TORCH_CONFIGS = [(64, False), (64, True), (256, False), (256, True)]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def parse(line):
    return dict(kv.split("=", 1) for kv in line.split())


CMLAB_ENV = {}                    # --cmlab-env


def bench_env(threads, cmlab=False):
    """threads 0: no OMP_NUM_THREADS, the count left to cmlab's rule (threads.h)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "SkylakeX"))
    if threads == 0:
        del env["OMP_NUM_THREADS"]
    if cmlab:
        env["CMLAB_WAIT_RULE"] = "spin"
        env.update(CMLAB_ENV)
    return env


def run(cmd, threads, cmlab=False):
    """The key=value lines the command prints, parsed (bench_train prints one per thread count)."""
    out = subprocess.run(cmd, env=bench_env(threads, cmlab), check=True, stdout=subprocess.PIPE, text=True).stdout
    return [parse(l) for l in out.splitlines() if "=" in l and not l.startswith(" ")]


def sgemm_peak(build):
    r = run([os.path.join(build, "bench", "bench_sgemm"), "--threads", "2"], 2, True)[-1]
    return float(r["sgemm_gflops"])


def torch_label(batch, cl):
    return "b%d %s" % (batch, "channels_last" if cl else "contiguous")


def measure(build, name, ev, first=2):
    """One repetition of row `name`: cmlab at `first` threads (0: as many as its rule picks with
    no count given) and 1, PyTorch in each configuration. Each record gets side (cmlab, cmlab1,
    torch) and, for PyTorch, tcfg."""
    cfg, mode, batch, warm, iters, _ = ROWS[name]
    recs = []
    if mode == "eval":
        for side, threads in (("cmlab", first), ("cmlab1", 1)):
            r = ev.cmlab(threads, bench_env(threads, True))
            r["side"] = side
            recs.append(r)
    else:
        args = [cfg, mode, "--batch", str(batch), "--warmup", str(warm), "--iters", str(iters)]
        prec = ["--precision", "bf16"] if name in BF16 else []
        for side, r in zip(("cmlab", "cmlab1"), run([os.path.join(build, "bench", "bench_train")] + args + prec +
                                                   ["--threads", "%d,1" % first], first, True)):
            r["side"] = side
            recs.append(r)
    for tb, cl in TORCH_CONFIGS:
        if mode == "eval":
            cmd = ev.torch_cmd(tb, cl)
        else:
            cmd = [PY, os.path.join(HERE, "bench_train.py"), cfg, mode, "--batch", str(tb), "--warmup", str(warm),
                   "--iters", str(iters), "--threads", "2"] + (["--channels-last"] if cl else []) + \
                  (["--bf16"] if name in BF16 else [])
        try:
            r = run(cmd, 2)[-1]
        except subprocess.CalledProcessError as e:
            # A configuration that cannot run here (out of memory at batch 256, say) is left out
            # of PyTorch's best, and said so.
            print("  %s: PyTorch %s failed (exit %d); left out" % (name, torch_label(tb, cl), e.returncode), flush=True)
            continue
        r["side"], r["tcfg"] = "torch", torch_label(tb, cl)
        recs.append(r)
    return recs


class Spinner:
    """A busy process pinned to the last core while the block runs."""

    def __enter__(self):
        core = str(os.cpu_count() - 1)
        self.p = subprocess.Popen(["taskset", "-c", core, PY, "-c", "while True: pass"])
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def med(raw, name, side, key, tcfg=None, state="idle"):
    """The median over repetitions; NaN when there is no run (a failed PyTorch configuration)."""
    v = [float(r[key]) for r in raw if r["row"] == name and r["side"] == side and r["state"] == state
         and (tcfg is None or r.get("tcfg") == tcfg)]
    return statistics.median(v) if v else float("nan")


def torch_best(raw, name, state="idle"):
    """PyTorch's fastest configuration of the row (by median img/s) and that median."""
    cfgs = [torch_label(b, cl) for b, cl in TORCH_CONFIGS]
    speeds = {c: med(raw, name, "torch", "img_s", c, state) for c in cfgs}
    speeds = {c: v for c, v in speeds.items() if not math.isnan(v)}
    if not speeds:   # every configuration failed (said above)
        return "none ran", float("nan")
    best = max(speeds, key=speeds.get)
    return best, speeds[best]


def table_header(*cols):
    print("| " + " | ".join(cols) + " |")
    print("|---" * len(cols) + "|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="S rows only, 1 repetition (a smoke test)")
    ap.add_argument("--only", default="", help="comma-separated rows: " + ",".join(ROWS))
    ap.add_argument("--contended", action="store_true",
                    help="each row also with a busy process on one core (default rows S-train,S-sample)")
    ap.add_argument("--cmlab-env", action="append", default=[], metavar="VAR=VALUE",
                    help="a variable for cmlab's processes only (repeatable), e.g. OMP_WAIT_POLICY=passive")
    a = ap.parse_args()
    for kv in a.cmlab_env:
        if "=" not in kv:
            ap.error("--cmlab-env %s: VAR=VALUE" % kv)
        CMLAB_ENV[kv.split("=", 1)[0]] = kv.split("=", 1)[1]
    rows = [r for r in a.only.split(",") if r] if a.only else (CONTENDED_DEFAULT if a.contended else DEFAULT)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error("--only: unknown rows %s (rows: %s)" % (", ".join(unknown), ", ".join(ROWS)))
    if a.quick:
        rows = [r for r in rows if ROWS[r][0] == "S"]
        a.reps = 1
    ev = bench_eval.Eval(a.build) if any(ROWS[r][1] == "eval" for r in rows) else None
    states = ["idle", "contended"] if a.contended else ["idle"]

    t_start = time.time()
    load0 = loadavg()
    print("machine: %s, %d cores; load average %s" % (cpu_name(), os.cpu_count(), load0), flush=True)
    peaks = [sgemm_peak(a.build)]
    print("sgemm peak (OpenBLAS, 2 threads, n=2048): %.1f GFLOP/s" % peaks[0], flush=True)
    if ev:
        ev.prepare()
    raw = []
    # --contended: cmlab with no thread count given, as a user runs it (its rule may leave the spin
    # loop's core); otherwise 2 threads, as PyTorch.
    first = 0 if a.contended else 2
    for rep in range(a.reps):
        for name in rows:
            for state in states:
                if state == "contended":
                    with Spinner():
                        recs = measure(a.build, name, ev, first)
                else:
                    recs = measure(a.build, name, ev, first)
                for r in recs:
                    r["row"], r["state"] = name, state
                    raw.append(r)
                    print("  rep %d %-14s %-9s %-6s %-24s %9.1f ms/iter  %7.1f img/s  rss %7.1f MB  (load %s)" % (
                        rep + 1, name, state, r["side"], r.get("tcfg", ""), float(r["ms"]), float(r["img_s"]),
                        float(r["rss_mb"]), loadavg()), flush=True)
    peaks.append(sgemm_peak(a.build))
    peak = max(peaks)

    print()
    print("cmlab vs PyTorch %s at its best (batch 64 and 256, contiguous and channels_last)" %
          subprocess.run([PY, "-c", "import torch; print(torch.__version__)"], stdout=subprocess.PIPE,
                         text=True).stdout.strip())
    print("%s, %d cores; 2 threads each; medians of %d interleaved repetitions%s" % (
        cpu_name(), os.cpu_count(), a.reps, "; cmlab with " + " ".join(a.cmlab_env) if a.cmlab_env else ""))
    print("load average %s at the start, %s at the end; sgemm peak %.1f GFLOP/s (2 threads; %s)" % (
        load0, loadavg(), peak, ", ".join("%.1f" % p for p in peaks)))
    print()
    table_header("work", "batch", "cmlab img/s", "PyTorch best img/s", "PyTorch best", "ratio",
                 "PyTorch at cmlab's batch", "cmlab RSS MB", "PyTorch RSS MB", "cmlab GFLOP/s", "of sgemm peak",
                 "cmlab 1-thread img/s", "2 vs 1 thread")
    for name in rows:
        cfg, mode, batch, _, _, what = ROWS[name]
        c2, c1 = med(raw, name, "cmlab", "img_s"), med(raw, name, "cmlab1", "img_s")
        best, t2 = torch_best(raw, name)
        same = med(raw, name, "torch", "img_s", torch_label(batch, False)) if batch in (64, 256) else float("nan")
        rc, rt = med(raw, name, "cmlab", "rss_mb"), med(raw, name, "torch", "rss_mb", best)
        gflop = med(raw, name, "cmlab", "gflop")
        gfs = gflop / (med(raw, name, "cmlab", "ms") * 1e-3)
        opt = lambda fmt, v: "-" if math.isnan(v) else fmt % v
        print("| %s %s | %d | %.1f | %.1f | %s | %.2f | %s | %.0f | %.0f | %s | %s | %.1f | %.2f |" % (
            cfg, what, batch, c2, t2, best, c2 / t2, opt("%.1f", same), rc, rt, opt("%.1f", gfs),
            opt("%.0f%%", 100 * gfs / peak), c1, c2 / c1))
    print()
    bf16_rows = [r for r in rows if r in BF16]
    if bf16_rows:
        print("bf16 beside fp32 (img/s; '-' where the fp32 row was not run)")
        print()
        table_header("work", "cmlab fp32", "cmlab bf16", "cmlab bf16 / fp32", "PyTorch fp32 best",
                     "PyTorch bf16 best", "PyTorch bf16 / fp32", "cmlab bf16 / PyTorch bf16")
        for name in bf16_rows:
            peer = BF16[name]
            cfg, _, _, _, _, what = ROWS[peer]
            cb = med(raw, name, "cmlab", "img_s")
            cf = med(raw, peer, "cmlab", "img_s") if peer in rows else float("nan")
            tbest, tb = torch_best(raw, name)
            tf = torch_best(raw, peer)[1] if peer in rows else float("nan")
            opt = lambda fmt, v: "-" if math.isnan(v) else fmt % v
            print("| %s %s | %s | %.1f | %s | %s | %.1f (%s) | %s | %.2f |" % (
                cfg, what, opt("%.1f", cf), cb, opt("%.2f", cb / cf), opt("%.1f", tf), tb, tbest,
                opt("%.2f", tb / tf), cb / tb))
        print()
        print("issue 19's targets: sampling cmlab bf16 / fp32 >= 1.6 and cmlab bf16 / PyTorch bf16 >= 2; training")
        print("cmlab bf16 / fp32 >= 1.4")
        print()
    if a.contended:
        print("contended: a busy process (a Python spin loop) pinned to core %d during the measurement" %
              (os.cpu_count() - 1))
        print()
        print("cmlab ran with no thread count given, as a user runs it; its threads idle / contended as the")
        print("rule picked them (medians)")
        print()
        table_header("work", "cmlab idle", "cmlab contended", "kept", "cmlab threads idle / contended",
                     "cmlab 1-thread contended", "PyTorch best idle", "PyTorch best contended", "kept")
        for name in rows:
            cfg, _, _, _, _, what = ROWS[name]
            ci, cc = med(raw, name, "cmlab", "img_s"), med(raw, name, "cmlab", "img_s", state="contended")
            ni, nc = med(raw, name, "cmlab", "threads"), med(raw, name, "cmlab", "threads", state="contended")
            c1 = med(raw, name, "cmlab1", "img_s", state="contended")
            (bi, ti), (bc, tc) = torch_best(raw, name), torch_best(raw, name, "contended")
            print("| %s %s | %.1f | %.1f | %.0f%% | %g / %g | %.1f | %.1f (%s) | %.1f (%s) | %.0f%% |" % (
                cfg, what, ci, cc, 100 * cc / ci, ni, nc, c1, ti, bi, tc, bc, 100 * tc / ti))
        print()
    if a.reps > 1:
        # Per repetition: cmlab against PyTorch's best configuration of the run (its run of the
        # same repetition), and cmlab's 2-thread against its own 1-thread iterations.
        print("per repetition (min-median-max):")
        for name in rows:
            best, _ = torch_best(raw, name)
            sides = {s: [float(r["img_s"]) for r in raw if r["row"] == name and r["state"] == "idle" and r["side"] == s
                         and (s != "torch" or r["tcfg"] == best)] for s in ("cmlab", "torch", "cmlab1")}
            vs_torch = sorted(c / t for c, t in zip(sides["cmlab"], sides["torch"]))
            vs_one = sorted(c / o for c, o in zip(sides["cmlab"], sides["cmlab1"]))
            # The same from each process's fastest iteration (ms_min; bench_train's rows): the host's
            # noise only adds time, and a pause on either core stalls both threads at the next barrier.
            fast = {s: [float(r["ms_min"]) for r in raw if r["row"] == name and r["state"] == "idle"
                        and r["side"] == s and "ms_min" in r] for s in ("cmlab", "cmlab1")}
            vs_one_fast = sorted(o / c for c, o in zip(fast["cmlab"], fast["cmlab1"]))
            rng = lambda v: "%.2f-%.2f-%.2f" % (v[0], statistics.median(v), v[-1])
            print("  %s: ratio %s, 2 vs 1 thread %s%s" % (
                name, rng(vs_torch), rng(vs_one),
                ", on the fastest iterations %s" % rng(vs_one_fast) if vs_one_fast else ""))
        print()
    print("ratio = cmlab img/s / PyTorch's best img/s (> 1: cmlab faster); img/s counts images, trajectories or")
    print("latents of the batch; PyTorch RSS is its best configuration's. GFLOP/s counts the model's conv, linear")
    print("and attention products (forward, both backward products; the target pass), as cmlab's ops count them.")
    print("total time %.0f s" % (time.time() - t_start))


if __name__ == "__main__":
    main()
