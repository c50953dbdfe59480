"""philox.py: an independent numpy twin of src/autograd/rng.c (Philox4x32-10 and the mapping of rng.h).

Every number is a pure function of (seed, stream, step, sample, element):
    key = {seed lo, seed hi}, counter = {element // 4, sample, step, stream}, element e -> lane e % 4.
Other fixture scripts import uniform / normal / bernoulli / u32 to reproduce the C library's noise.

Run as `philox.py OUT.h5`: checks Random123's known-answer vectors (exit 1 on failure), then writes
one group per parameter combination holding the datasets uniform, normal, bernoulli, u32, each with
the attributes seed (uint64), stream, step, sample0, nsamples, per_sample, p.
"""
import sys

import numpy as np

M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter[4], key[2] -> output[4].
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]


def philox4x32_10(ctr, key):
    """ctr: 4 broadcastable uint32 arrays, key: 2 -> the 4 output lanes as uint32 arrays.
    The 32x32->64 bit products are taken in uint64; everything else wraps in uint32 (arrays, never
    numpy scalars, which warn on overflow)."""
    c0, c1, c2, c3 = np.broadcast_arrays(*[np.atleast_1d(np.asarray(c, np.uint32)) for c in ctr])
    k0, k1 = (np.atleast_1d(np.asarray(k, np.uint32)) for k in key)
    for rnd in range(10):
        if rnd:
            k0, k1 = k0 + W0, k1 + W1
        p0 = M0 * c0.astype(np.uint64)
        p1 = M1 * c2.astype(np.uint64)
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), p1.astype(np.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _blocks(seed, stream, step, nsamples, sample0, per_sample):
    """The lanes of every block as uint32 [nsamples, nblocks, 4]."""
    nblk = (per_sample + 3) // 4
    b = np.arange(nblk, dtype=np.uint32)[None, :]
    s = ((sample0 + np.arange(nsamples, dtype=np.int64)) & 0xffffffff).astype(np.uint32)[:, None]
    key = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)
    lanes = philox4x32_10((b, s, step & 0xffffffff, stream & 0xffffffff), key)
    return np.stack(lanes, axis=-1)


def _to_uniform(u):
    return (u >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def u32(seed, stream, step, nsamples, sample0, per_sample):
    blk = _blocks(seed, stream, step, nsamples, sample0, per_sample)
    return blk.reshape(nsamples, -1)[:, :per_sample].copy()


def uniform(seed, stream, step, nsamples, sample0, per_sample):
    return _to_uniform(u32(seed, stream, step, nsamples, sample0, per_sample))


def normal(seed, stream, step, nsamples, sample0, per_sample):
    """Box-Muller in float64 on lane pairs (0,1), (2,3); u1 in (0, 1] keeps log finite."""
    blk = _blocks(seed, stream, step, nsamples, sample0, per_sample)
    a, b = blk[..., 0::2], blk[..., 1::2]
    u1 = ((a >> np.uint32(8)).astype(np.float64) + 1.0) * 2.0 ** -24
    u2 = (b >> np.uint32(8)).astype(np.float64) * 2.0 ** -24
    r, theta = np.sqrt(-2.0 * np.log(u1)), 2.0 * np.pi * u2
    z = np.empty(blk.shape, np.float64)
    z[..., 0::2], z[..., 1::2] = r * np.cos(theta), r * np.sin(theta)
    return z.astype(np.float32).reshape(nsamples, -1)[:, :per_sample].copy()


def bernoulli(seed, stream, step, nsamples, sample0, per_sample, p):
    x = uniform(seed, stream, step, nsamples, sample0, per_sample)
    return (x < np.float32(p)).astype(np.float32)


def check_kat():
    ok = True
    for ctr, key, want in KAT:
        got = tuple(int(x[0]) for x in philox4x32_10(ctr, key))
        if got != want:
            ok = False
            print("philox.py: KAT FAIL ctr=%s key=%s got=%s want=%s" % (
                " ".join("%08x" % c for c in ctr), " ".join("%08x" % k for k in key),
                " ".join("%08x" % g for g in got), " ".join("%08x" % w for w in want)))
    return ok


# (seed, stream, step, sample0, nsamples, per_sample, p): a seed with both words and the top bit
# set, per_sample not a multiple of 4 (and 1), a nonzero sample0, step at 2^32-1.
CASES = [
    (0, 0, 0, 0, 4, 16, 0.5),
    (0xDEADBEEFCAFEF00D, 3, 12345, 7, 5, 37, 0.3),
    (42, 1, 0xffffffff, 100, 3, 1, 0.9),
    (123456789, 2, 7, 0, 64, 98, 0.1),
]


def main(out_path):
    import h5py
    if not check_kat():
        sys.exit(1)
    with h5py.File(out_path, "w") as f:
        for i, (seed, stream, step, sample0, nsamples, per_sample, p) in enumerate(CASES):
            args = (seed, stream, step, nsamples, sample0, per_sample)
            data = {"uniform": uniform(*args), "normal": normal(*args),
                    "bernoulli": bernoulli(*args, p), "u32": u32(*args)}
            for name, arr in data.items():
                d = f.create_dataset("case%d/%s" % (i, name), data=arr)
                d.attrs["seed"] = np.uint64(seed)
                for k, v in (("stream", stream), ("step", step), ("sample0", sample0),
                             ("nsamples", nsamples), ("per_sample", per_sample)):
                    d.attrs[k] = np.int64(v)
                d.attrs["p"] = np.float64(p)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: philox.py OUT.h5")
    main(sys.argv[1])
