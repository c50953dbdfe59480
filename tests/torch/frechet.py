"""frechet.py OUT.h5: scipy and hashlib oracles for src/eval/eval.c (read by tests/test_eval.c).

/sqrtm/<case>   a [d,d] float64 symmetric PSD, sqrt = scipy.linalg.sqrtm(a) (real part)
/fd/<case>      mu1, s1, mu2, s2 and attr fd: the Frechet distance as EDM's fid.py computes it,
                |mu1 - mu2|^2 + tr(s1 + s2 - 2 sqrtm(s1 @ s2))
/stats/<case>   feat [n,d] float32, mu = mean in float64, sigma = np.cov(feat, rowvar=False) (n - 1)
/sha256         data<i> uint8 (attr len<i> of them count; an empty message stores one 0), attr
                hex<i> = hashlib.sha256(data)
/weights        the weight hash of eval.h: datasets p<i> (float32, attr name), attr hex =
                sha256 over the parameters in byte order of their names of name + NUL + float32 LE
"""
import hashlib
import sys

import h5py
import numpy as np
import scipy.linalg

RNG = np.random.default_rng(20240612)


def spd(d, cond=100.0):
    q, _ = np.linalg.qr(RNG.standard_normal((d, d)))
    lam = np.geomspace(1.0, 1.0 / cond, d) * RNG.uniform(0.5, 2.0)
    return (q * lam) @ q.T


def psd(d, rank):
    x = RNG.standard_normal((d, rank))
    return x @ x.T / rank


def sqrtm(a):
    s = scipy.linalg.sqrtm(a)
    return np.real(s)


def fid(mu1, s1, mu2, s2):
    m = np.square(mu1 - mu2).sum()
    s = scipy.linalg.sqrtm(np.dot(s1, s2))
    return float(np.real(m + np.trace(s1 + s2 - s * 2)))


def main(path):
    with h5py.File(path + ".tmp", "w") as h:
        cases = {"spd5": spd(5), "spd64_cond1e4": spd(64, 1e4), "psd32_rank10": psd(32, 10),
                 "diag7": np.diag(RNG.uniform(0.1, 3.0, 7)), "psd1_zero": np.zeros((1, 1))}
        for name, a in cases.items():
            g = h.create_group("sqrtm/" + name)
            g["a"] = a
            g["sqrt"] = sqrtm(a)
        # Feature-like statistics: one set from real draws, one pair of full-rank SPDs, and a
        # rank-deficient pair (fewer samples than dimensions, as at small n).
        fds = {}
        for name, d in (("spd16", 16), ("spd100", 100)):
            fds[name] = (RNG.standard_normal(d), spd(d, 50.0), RNG.standard_normal(d) * 0.3, spd(d, 50.0))
        f1, f2 = RNG.standard_normal((20, 40)), RNG.standard_normal((25, 40)) * 1.5 + 0.2
        fds["rank_deficient40"] = (f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
        for name, (mu1, s1, mu2, s2) in fds.items():
            g = h.create_group("fd/" + name)
            g["mu1"], g["s1"], g["mu2"], g["s2"] = mu1, s1, mu2, s2
            g.attrs["fd"] = fid(mu1, s1, mu2, s2)
        for name, (n, d, shift) in {"n3000_d24": (3000, 24, 5.0), "n2_d3": (2, 3, 0.0),
                                    "n5000_d8": (5000, 8, 100.0)}.items():
            feat = (RNG.standard_normal((n, d)) @ RNG.standard_normal((d, d)) + shift).astype(np.float32)
            g = h.create_group("stats/" + name)
            g["feat"] = feat
            g["mu"] = feat.astype(np.float64).mean(0)
            g["sigma"] = np.cov(feat.astype(np.float64), rowvar=False)
        g = h.create_group("sha256")
        for i, data in enumerate([b"", b"abc", bytes(range(256)) * 3, b"x" * 55, b"y" * 56, b"z" * 64,
                                  bytes(range(251)) * 41 + b"q" * 13]):
            g["data%d" % i] = np.frombuffer(data or b"\0", dtype=np.uint8)
            g.attrs["len%d" % i] = len(data)
            g.attrs["hex%d" % i] = np.bytes_(hashlib.sha256(data).hexdigest())
        g = h.create_group("weights")
        names = ["fc.weight", "conv0a.bias", "conv0a.weight", "head.bias", "conv0a.weightz"]
        shapes = [(3, 5), (4,), (4, 1, 3, 3), (3,), (2,)]
        sha = hashlib.sha256()
        arrays = {}
        for i, (nm, sh) in enumerate(zip(names, shapes)):
            arrays[nm] = RNG.standard_normal(sh).astype(np.float32)
            d = g.create_dataset("p%d" % i, data=arrays[nm])
            d.attrs["name"] = np.bytes_(nm)
        for nm in sorted(names, key=lambda s: s.encode()):
            sha.update(nm.encode() + b"\0" + arrays[nm].astype("<f4").tobytes())
        g.attrs["count"] = len(names)
        g.attrs["hex"] = np.bytes_(sha.hexdigest())
    import os
    os.replace(path + ".tmp", path)
    print("frechet.py: %d sqrtm, %d fd, 3 stats cases -> %s" % (len(cases), len(fds), path))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: frechet.py OUT.h5")
    main(sys.argv[1])
