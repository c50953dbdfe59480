#!/bin/sh
# conv.sh: conv2d forward + backward, cmlab against PyTorch on the conv shapes of a small U-Net
# (batch 64, 2 threads each). Builds nothing: runs BUILD/bench/bench_conv and bench_conv.py
# alternately, REPS times each (alternating spreads machine noise over both sides), and prints
# the median over repetitions of each side's per-iteration median and the ratio PyTorch/cmlab
# (> 1: cmlab is faster); then the same for the fastest repetition, which is less sensitive to
# other load on a shared machine (the load average printed below says how busy it was).
#
# Usage: bench/conv.sh [BUILD_DIR (default build)] [REPS (default 5)] [ITERS (default 20)]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
reps=${2:-5}
iters=${3:-20}
python=${TORCH_PYTHON:-/usr/bin/python3}
bin="$build/bench/bench_conv"
[ -x "$bin" ] || { echo "conv.sh: $bin not found; build first (ninja -C $build)" >&2; exit 2; }

load0=$(cut -d' ' -f1 /proc/loadavg)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
i=1
while [ "$i" -le "$reps" ]; do
    "$bin" "$iters" | sed 's/^/cmlab\t/' >>"$out"
    "$python" "$here/bench_conv.py" "$iters" | sed 's/^/torch\t/' >>"$out"
    i=$((i + 1))
done

# Lines: side<TAB>shape<TAB>ms. Median and minimum per (side, shape), shapes in first-seen order.
awk -F'\t' -v reps="$reps" -v iters="$iters" -v load="$load0 -> $(cut -d' ' -f1 /proc/loadavg)" '
    !($2 in seen) { seen[$2] = 1; order[++n] = $2 }
    { k = $1 SUBSEP $2; c = ++cnt[k]; v[k, c] = $3 }
    function sorted(k, a,   m, i, j, t) {
        m = cnt[k]
        for (i = 1; i <= m; i++) a[i] = v[k, i]
        for (i = 2; i <= m; i++)
            for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return m
    }
    function median(k,   a, m) {
        m = sorted(k, a)
        return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    function best(k,   a) { sorted(k, a); return a[1] }
    function row(name, a, b, c, d) {
        printf "%-22s %8.2f %8.2f %7.2f   %8.2f %8.2f %7.2f\n", name, a, b, b / a, c, d, d / c
    }
    END {
        printf "conv2d forward+backward (dx, dw, db), batch 64, 2 threads: ms per iteration\n"
        printf "(each repetition: median of %d iterations; %d repetitions; load average %s)\n\n",
               iters, reps, load
        printf "%-22s %26s   %26s\n", "", "median of repetitions", "fastest repetition"
        printf "%-22s %8s %8s %7s   %8s %8s %7s\n", "shape", "cmlab", "pytorch", "ratio",
               "cmlab", "pytorch", "ratio"
        for (i = 1; i <= n; i++) {
            a = median("cmlab" SUBSEP order[i]); b = median("torch" SUBSEP order[i])
            c = best("cmlab" SUBSEP order[i]); d = best("torch" SUBSEP order[i])
            ta += a; tb += b; tc += c; td += d
            row(order[i], a, b, c, d)
        }
        row("total", ta, tb, tc, td)
        printf "\nratio = pytorch / cmlab: > 1 means cmlab is faster\n"
    }' "$out"
