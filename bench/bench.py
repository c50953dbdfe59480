"""bench.py: the training and sampling benchmark against PyTorch, one table (./run.sh bench).

Runs, interleaved, REPS times each: bench_train (cmlab, whose timed iterations alternate between
2 threads and 1, so that the machine's drift affects both alike) and bench_train.py (PyTorch
1.13, 2 threads) on the configurations S and M, for one CT training step (batch 64) and one-step
sampling (batch 256); each run is its own process, so its peak RSS is that workload's alone. OpenBLAS's sgemm peak (bench_sgemm, 2 threads) is measured before and
after, and the better of the two is the peak. Both sides get OMP_NUM_THREADS and
OPENBLAS_CORETYPE (cmlab picks SkylakeX on this CPU: tensor.h, cm_blas_select_core).

Usage: /usr/bin/python3 bench/bench.py BUILD_DIR [--reps R] [--quick] [--only S-train,M-sample,...]
Prints the table (medians over repetitions of each run's median step time), the per-repetition
ranges of both ratios, and the raw lines.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.environ.get("TORCH_PYTHON", "/usr/bin/python3")

# (config, mode): (warm-up, timed iterations) per process
WORK = {
    ("S", "train"): (2, 5),
    ("S", "sample"): (1, 3),
    ("M", "train"): (1, 3),
    ("M", "sample"): (1, 3),
}


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


def run(cmd, threads):
    """The key=value lines the command prints, parsed (bench_train prints one per thread count)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "SkylakeX"))
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [parse(l) for l in out.splitlines() if "=" in l]


def sgemm_peak(build):
    r = run([os.path.join(build, "bench", "bench_sgemm"), "--threads", "2"], 2)[-1]
    return float(r["sgemm_gflops"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="S only, 1 repetition (a smoke test)")
    ap.add_argument("--only", default="", help="comma-separated CONFIG-MODE list, e.g. S-train,M-sample")
    a = ap.parse_args()
    work = dict(WORK)
    if a.only:
        keep = {tuple(w.split("-")) for w in a.only.split(",")}
        work = {k: v for k, v in work.items() if k in keep}
    if a.quick:
        work = {k: v for k, v in work.items() if k[0] == "S"}
        a.reps = 1
    cm = os.path.join(a.build, "bench", "bench_train")
    tw = os.path.join(HERE, "bench_train.py")

    t_start = time.time()
    load0 = loadavg()
    print("machine: %s, %d cores; load average %s" % (cpu_name(), os.cpu_count(), load0), flush=True)
    peaks = [sgemm_peak(a.build)]
    print("sgemm peak (OpenBLAS, 2 threads, n=2048): %.1f GFLOP/s" % peaks[0], flush=True)
    raw = []
    for rep in range(a.reps):
        for (cfg, mode), (warm, iters) in work.items():
            args = [cfg, mode, "--warmup", str(warm), "--iters", str(iters)]
            for sides, cmd, threads in ((("cmlab", "cmlab1"), [cm], "2,1"), (("torch",), [PY, tw], "2")):
                for side, r in zip(sides, run(cmd + args + ["--threads", threads], 2)):
                    r["side"] = side
                    raw.append(r)
                    print("  rep %d %s-%s %-6s %8.1f ms/iter  %7.1f img/s  rss %7.1f MB  (load %s)" % (
                        rep + 1, cfg, mode, side, float(r["ms"]), float(r["img_s"]), float(r["rss_mb"]), loadavg()),
                        flush=True)
    peaks.append(sgemm_peak(a.build))
    peak = max(peaks)

    def med(cfg, mode, side, key):
        return statistics.median(float(r[key]) for r in raw
                                 if r["config"] == cfg and r["mode"] == mode and r["side"] == side)

    print()
    print("cmlab vs PyTorch %s, CT training step (batch 64) and one-step sampling (batch 256)" %
          subprocess.run([PY, "-c", "import torch; print(torch.__version__)"], stdout=subprocess.PIPE,
                         text=True).stdout.strip())
    print("%s, %d cores; 2 threads each; medians of %d interleaved repetitions" % (cpu_name(), os.cpu_count(), a.reps))
    print("load average %s at the start, %s at the end; sgemm peak %.1f GFLOP/s (2 threads; %s)" % (
        load0, loadavg(), peak, ", ".join("%.1f" % p for p in peaks)))
    print()
    hdr = ("| work | cmlab img/s | PyTorch img/s | ratio | cmlab RSS MB | PyTorch RSS MB | cmlab GFLOP/s "
           "| of sgemm peak | cmlab 1-thread img/s | 2 vs 1 thread |")
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    for (cfg, mode) in work:
        c2, t2, c1 = (med(cfg, mode, s, "img_s") for s in ("cmlab", "torch", "cmlab1"))
        rc, rt = med(cfg, mode, "cmlab", "rss_mb"), med(cfg, mode, "torch", "rss_mb")
        gflop = med(cfg, mode, "cmlab", "gflop")
        gfs = gflop / (med(cfg, mode, "cmlab", "ms") * 1e-3)
        name = "%s %s" % (cfg, "train step" if mode == "train" else "1-step sample")
        print("| %s | %.1f | %.1f | %.2f | %.0f | %.0f | %.1f | %.0f%% | %.1f | %.2f |" % (
            name, c2, t2, c2 / t2, rc, rt, gfs, 100 * gfs / peak, c1, c2 / c1))
    print()
    if a.reps > 1:
        # Per repetition: cmlab against the PyTorch run right after it, and cmlab's 2-thread
        # against its own 1-thread iterations (alternating in one process).
        print("per repetition (min-median-max):")
        for (cfg, mode) in work:
            sides = {s: [float(r["img_s"]) for r in raw if r["config"] == cfg and r["mode"] == mode and r["side"] == s]
                     for s in ("cmlab", "torch", "cmlab1")}
            vs_torch = sorted(c / t for c, t in zip(sides["cmlab"], sides["torch"]))
            vs_one = sorted(c / o for c, o in zip(sides["cmlab"], sides["cmlab1"]))
            rng = lambda v: "%.2f-%.2f-%.2f" % (v[0], statistics.median(v), v[-1])
            print("  %s %s: ratio %s, 2 vs 1 thread %s" % (cfg, mode, rng(vs_torch), rng(vs_one)))
        print()
    print("ratio = cmlab img/s / PyTorch img/s (> 1: cmlab faster); GFLOP/s counts the model's conv,")
    print("linear and attention products (forward, both backward products; the target pass), as cmlab's ops count them.")
    print("total time %.0f s" % (time.time() - t_start))


if __name__ == "__main__":
    main()
