"""perf_threads.py: where 2 threads wait for each other, from a perf recording.

  perf record -F 2000 -g -o /tmp/p.data build/bench/bench_train S sample --threads 2 --iters 6
  /usr/bin/python3 bench/perf_threads.py /tmp/p.data

For every sample of the main thread it looks up the worker's sample nearest in time (within
0.6 ms; none: the worker sleeps) and counts the pair as both busy, main alone (the worker spins
in libgomp or sleeps: a serial piece or the main thread's longer share) or worker alone (main
spins). It prints the three fractions and the functions behind the two "alone" kinds: the
functions that keep one core idle, which a per-function profile does not show. Written for the
2-core machine (one worker thread); with more threads it pairs main with the first worker.
"""
import bisect
import collections
import subprocess
import sys


def samples(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "tid,time,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout
    got, cur = [], None
    for line in out.split("\n"):
        if not line.strip():
            cur = None
        elif not line.startswith("\t"):   # a sample's header (the tid is padded with spaces)
            tid, t = line.split()[:2]
            cur = (int(tid), float(t.rstrip(":")), [])
            got.append(cur)
        elif cur is not None:
            parts = line.strip().split(None, 1)
            if len(parts) > 1:
                sym, _, dso = parts[1].rpartition(" (")
                cur[2].append((sym, dso.rstrip(")").split("/")[-1]))
    return got


def label(frames):
    if not frames:
        return "?"
    sym, dso = frames[0]
    if "libgomp" in dso:
        return "WAIT"
    if sym.startswith("[unknown]"):
        sym = dso
    if ("libc" in dso or "kernel" in dso) and len(frames) > 1:
        sym += " <- " + frames[1][0]   # memmove, memset, page faults: name the caller
    return sym


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    got = samples(sys.argv[1])
    tids = collections.Counter(s[0] for s in got)
    if len(tids) < 2:
        sys.exit("perf_threads: the recording has one thread")
    main_tid = min(tids)
    worker_tid = min(t for t in tids if t != main_tid)
    worker = sorted((s for s in got if s[0] == worker_tid), key=lambda s: s[1])
    wt = [s[1] for s in worker]
    alone_main, alone_worker = collections.Counter(), collections.Counter()
    both = total = 0
    for s in got:
        if s[0] != main_tid:
            continue
        total += 1
        i = bisect.bisect_left(wt, s[1])
        near = [worker[j] for j in (i - 1, i) if 0 <= j < len(worker) and abs(wt[j] - s[1]) < 6e-4]
        m = label(s[2])
        w = label(min(near, key=lambda x: abs(x[1] - s[1]))[2]) if near else "ASLEEP"
        if m != "WAIT" and w in ("WAIT", "ASLEEP"):
            alone_main[m + (" [worker asleep]" if w == "ASLEEP" else "")] += 1
        elif m == "WAIT" and w not in ("WAIT", "ASLEEP"):
            alone_worker[w] += 1
        elif m != "WAIT":
            both += 1
    pct = lambda n: 100.0 * n / max(total, 1)
    print(f"main-thread samples {total}: both busy {pct(both):.1f}%, main alone "
          f"{pct(sum(alone_main.values())):.1f}%, worker alone {pct(sum(alone_worker.values())):.1f}%")
    for title, c in (("main busy, worker waiting or asleep", alone_main),
                     ("worker busy, main waiting", alone_worker)):
        print(f"--- {title}")
        for k, n in c.most_common(15):
            print(f"{pct(n):6.1f}%  {k}")


if __name__ == "__main__":
    main()
