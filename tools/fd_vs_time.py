"""fd_vs_time.py: the Frechet distance of every checkpoint of some runs against the wall time of
training behind it (issue #20: cmlab's CPU recipes and the PyTorch twin at equal wall time).

    /usr/bin/python3 tools/fd_vs_time.py runs/edm_cifar10_cpu runs/ict_cifar10_cpu runs/ict_torch \\
        --features runs/classifier_cifar10/ckpt/step_00005000.h5 --n 2000 --out runs/fd_vs_time

For each checkpoint <run>/ckpt/step_*.h5 (train with train.keep_checkpoints = 0 to keep them
all) it reads the root attributes method and train_seconds (the training loop's wall time,
summed over resumes; src/io/checkpoint.h) and runs `cmlab eval CKPT --features F --n N --nfe ...`:
1 and 2 steps for consistency models (ct, cd, bcm; --nfe-cm), 35 NFE for an EDM teacher with its
own solver (--nfe-edm). Records already in <run>/eval.json for that checkpoint, feature network,
n and NFE are reused, so the script can be rerun while the runs go on. A checkpoint without
train_seconds (written before cmlab recorded it) is skipped with a warning.

Writes into --out: fd_vs_time.csv (run, method, step, train_seconds, nfe, fd), fd_vs_time.md
(the same as a table, one row per checkpoint, one column per NFE) and fd_vs_time.html with one
SVG line chart per NFE (FD against minutes of training, one line per run) in the style of
`cmlab ablate`'s report.html (src/eval/chart.c).
"""
import argparse
import glob
import html
import json
import math
import os
import subprocess
import sys

import h5py

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22"]   # chart.c
CM_METHODS = ("ct", "cd", "bcm")


def attr(f, name, default=None):
    v = f.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def records(run):
    path = os.path.join(run, "eval.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def find(run, ckpt, features, n, nfe):
    for r in records(run):
        if (os.path.basename(r["checkpoint"]) == os.path.basename(ckpt) and r["feature_net"] == features
                and r["n"] == n and r["nfe"] == nfe and r["metric"] == "fd"):
            return r["value"]
    return None


def evaluate(a, run, ckpt, nfes):
    todo = [k for k in nfes if find(run, ckpt, a.features, a.n, k) is None]
    if todo:
        cmd = [a.cmlab, "eval", ckpt, "--features", a.features, "--n", str(a.n), "--nfe",
               ",".join(map(str, todo)), "--threads", str(a.threads)]
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            sys.exit("fd_vs_time: cmlab eval of %s exited %d" % (ckpt, rc))
    return {k: find(run, ckpt, a.features, a.n, k) for k in nfes}


def svg_chart(title, series):
    """A line chart like chart_svg: series [(name, [(x, y)])], axes with five ticks, a legend."""
    W, H, L, R, T, B = 640, 360, 60, 170, 30, 40
    pts = [p for _, s in series for p in s if math.isfinite(p[1])]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" font-size="11">' % (W, H, W, H),
           '<text x="%d" y="18" font-size="13" font-weight="bold">%s</text>' % (L, html.escape(title))]
    if not pts:
        out.append('<text x="%d" y="%d">no data yet</text></svg>' % (L, H // 2))
        return "\n".join(out)
    x0, x1 = 0.0, max(p[0] for p in pts) or 1.0
    y0, y1 = 0.0, max(p[1] for p in pts) or 1.0
    sx = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)   # noqa: E731
    sy = lambda y: H - B - (y - y0) / (y1 - y0) * (H - T - B)   # noqa: E731
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>' % (L, T, W - L - R, H - T - B))
    for i in range(5):
        xv, yv = x0 + i / 4 * (x1 - x0), y0 + i / 4 * (y1 - y0)
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%.3g</text>' % (sx(xv), H - B + 14, xv))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.3g</text>' % (L - 4, sy(yv) + 4, yv))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">minutes of training</text>' % ((L + W - R) / 2, H - 6))
    out.append('<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">FD</text>'
               % ((T + H - B) / 2, (T + H - B) / 2))
    for i, (name, s) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        s = [p for p in s if math.isfinite(p[1])]
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>'
                   % (color, " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in s)))
        out += ['<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>' % (sx(x), sy(y), color) for x, y in s]
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (W - R + 10, T + 14 + 16 * i, color, html.escape(name)))
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (each with ckpt/step_*.h5)")
    ap.add_argument("--features", required=True, help="the feature network (a method = classifier checkpoint)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nfe-cm", default="1,2", help="NFEs of consistency models (default 1,2)")
    ap.add_argument("--nfe-edm", default="35", help="NFEs of EDM teachers (default 35)")
    ap.add_argument("--cmlab", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "cmlab"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="directory for fd_vs_time.{csv,md,html}")
    ap.add_argument("--points", type=int, default=0,
                    help="score at most this many checkpoints per run, the nearest to K even steps of its "
                         "training time (the last always); 0: every one. EDM at 35 NFE costs ~17x a 2-step eval")
    a = ap.parse_args()
    rows = []
    for run in a.runs:
        name = os.path.basename(os.path.normpath(run))
        ckpts = []
        for ckpt in sorted(glob.glob(os.path.join(run, "ckpt", "step_*.h5"))):
            with h5py.File(ckpt, "r") as f:
                method, step, secs = attr(f, "method"), int(attr(f, "step")), float(attr(f, "train_seconds", -1))
            if secs < 0:
                print("warning: %s has no train_seconds (written before cmlab recorded it): skipped" % ckpt,
                      file=sys.stderr)
                continue
            ckpts.append((ckpt, method, step, secs))
        if a.points > 0 and len(ckpts) > a.points:
            total = ckpts[-1][3]
            keep = {min(range(len(ckpts)), key=lambda j: abs(ckpts[j][3] - total * (i + 1) / a.points))
                    for i in range(a.points)}
            ckpts = [c for j, c in enumerate(ckpts) if j in keep]
        for ckpt, method, step, secs in ckpts:
            nfes = [int(k) for k in (a.nfe_cm if method in CM_METHODS else a.nfe_edm).split(",")]
            for nfe, fd in evaluate(a, run, ckpt, nfes).items():
                rows.append((name, method, step, secs, nfe, fd))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "fd_vs_time.csv"), "w") as f:
        f.write("run,method,step,train_seconds,nfe,fd\n")
        f.writelines("%s,%s,%d,%.1f,%d,%.6g\n" % r for r in rows)
    nfes = sorted({r[4] for r in rows})
    with open(os.path.join(a.out, "fd_vs_time.md"), "w") as f:
        f.write("| run | method | step | minutes | %s |\n" % " | ".join("FD %d NFE" % k for k in nfes))
        f.write("|---|---|---|---|%s\n" % ("---|" * len(nfes)))
        keys = sorted({r[:4] for r in rows}, key=lambda k: (k[0], k[2]))
        for k in keys:
            fds = {r[4]: r[5] for r in rows if r[:4] == k}
            f.write("| %s | %s | %d | %.1f | %s |\n" % (k[0], k[1], k[2], k[3] / 60,
                    " | ".join("%.2f" % fds[n] if n in fds else "" for n in nfes)))
    with open(os.path.join(a.out, "fd_vs_time.html"), "w") as f:
        f.write("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>FD against wall time</title></head>"
                "<body style=\"font-family: sans-serif\">\n<h1>FD against wall time</h1>\n<p>n = %d, feature network "
                "%s</p>\n" % (a.n, html.escape(a.features)))
        for nfe in nfes:
            series = [(run, [(r[3] / 60, r[5]) for r in rows if r[0] == run and r[4] == nfe])
                      for run in dict.fromkeys(r[0] for r in rows if r[4] == nfe)]
            f.write(svg_chart("FD at %d NFE" % nfe, series) + "\n")
        f.write("</body></html>\n")
    print("%d evaluations of %d checkpoints -> %s/fd_vs_time.{csv,md,html}"
          % (len(rows), len({r[:3] for r in rows}), a.out))


if __name__ == "__main__":
    main()
