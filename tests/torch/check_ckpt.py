"""check_ckpt.py: open a cmlab checkpoint with h5py, the way a user would, and compare it with
the expectations that tests/test_checkpoint.c writes to a JSON sidecar.

usage: check_ckpt.py CKPT.h5 EXPECT.json

Checks the documented layout (DESIGN.md "Checkpoints (HDF5)"): root attributes (format, version,
complete, step, method, config, seed, data cursor, world size, schedule state) come back as
numpy integers and floats, and the strings as UTF-8 bytes (fixed-length, so that HDF5's checksums
cover them: src/io/checkpoint.h); /weights/<set>/<name> holds exactly the network's
tensors, float32 in PyTorch shape, chunked with gzip and Fletcher32; /optimizer/<kind>/{m,v}
likewise with attrs step, betas, eps, lr, weight_decay; one tensor's bits equal the C side's;
the online weights form a torch state_dict. Every dataset is read, so h5py verifies every
checksum. Prints one line per failure and exits 1 if there was any.
"""
import json
import sys

import h5py
import numpy as np

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def text(value):
    """A fixed-length string attribute: h5py returns numpy bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else None


def check_tensor_group(f, group, params):
    """Every parameter present with its shape, float32, compressed and checksummed; nothing else."""
    if group not in f:
        fail(f"{group}: missing")
        return
    g = f[group]
    want = {p["name"]: tuple(p["shape"]) for p in params}
    check(set(g.keys()) == set(want), f"{group}: datasets {sorted(g.keys())}, expected {sorted(want)}")
    for name, shape in want.items():
        if name not in g:
            continue
        ds = g[name]
        path = f"{group}/{name}"
        check(ds.shape == shape, f"{path}: shape {ds.shape}, expected {shape}")
        check(ds.dtype == np.float32, f"{path}: dtype {ds.dtype}, expected float32")
        check(ds.chunks is not None and ds.compression == "gzip" and ds.fletcher32,
              f"{path}: chunks {ds.chunks}, compression {ds.compression}, fletcher32 {ds.fletcher32}")
        try:
            ds[()]
        except OSError as e:
            fail(f"{path}: h5py cannot read it: {e}")


def main():
    ckpt, expect_path = sys.argv[1], sys.argv[2]
    with open(expect_path) as fp:
        want = json.load(fp)
    with h5py.File(ckpt, "r") as f:
        a = f.attrs
        check(text(a.get("format")) == "cmlab-checkpoint", f"format attr {a.get('format')!r}")
        check(a.get("format_version") == 1, f"format_version {a.get('format_version')!r}")
        check(a.get("complete") == 1, f"complete {a.get('complete')!r}")
        for key in ("step", "seed", "data_epoch", "data_index", "world_size", "sched_N"):
            check(key in a and int(a[key]) == want[key], f"attr {key} = {a.get(key)!r}, expected {want[key]}")
        check(a.get("sched_mu") == want["sched_mu"], f"sched_mu {a.get('sched_mu')!r}, expected {want['sched_mu']!r}")
        check(text(a.get("method")) == want["method"], f"method {a.get('method')!r}")
        check(text(a.get("config")) == want["config"], f"config {a.get('config')!r}")
        check(set(f.keys()) <= {"weights", "optimizer", "eval"}, f"top-level groups {sorted(f.keys())}")

        for s in want["sets"]:
            check_tensor_group(f, f"/weights/{s}", want["params"])
        opt = f"/optimizer/{want['optimizer']}"
        if opt in f:
            oa = f[opt].attrs
            check(int(oa.get("step", -1)) == want["opt_step"], f"{opt} step {oa.get('step')!r}")
            check(len(oa.get("betas", [])) == 2, f"{opt} betas {oa.get('betas')!r}")
            for key in ("eps", "lr", "weight_decay"):
                check(key in oa, f"{opt} has no attr {key}")
        else:
            fail(f"{opt}: missing")
        for moment in ("m", "v"):
            check_tensor_group(f, f"{opt}/{moment}", want["params"])

        vals = want["values"]
        try:
            got = np.asarray(f[vals["dataset"]][()]).ravel().view(np.uint32)
            expected = np.array(vals["bits"], dtype=np.uint32)
            check(got.shape == expected.shape and np.array_equal(got, expected),
                  f"{vals['dataset']}: values differ from the C side in "
                  f"{int(np.sum(got != expected)) if got.shape == expected.shape else 'shape'} places")
        except (OSError, KeyError) as e:
            fail(f"{vals['dataset']}: {e}")

        if not failures:
            import torch
            sd = {k: torch.from_numpy(v[()]) for k, v in f["/weights/online"].items()}
            for p in want["params"]:
                check(sd[p["name"]].shape == torch.Size(p["shape"]) and sd[p["name"]].dtype == torch.float32,
                      f"torch state_dict {p['name']}: {sd[p['name']].shape}")
            print(f"{ckpt}: {len(want['params'])} tensors x {len(want['sets'])} weight sets + Adam m/v, "
                  f"attributes and one tensor's bits match; loads as a torch state_dict")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
