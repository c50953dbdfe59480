"""edit_bases.py OUT.h5: numpy's QR of the editing bases (read by tests/test_edit.c).

reference/cm.md §7.3: colourisation's 3x3 Q and super-resolution's p^2 x p^2 Q are the Q of a QR
factorisation of [v, e_2, ..., e_n], v the luminance weights (0.2989, 0.5870, 0.1140) or the
constant vector. numpy.linalg.qr (LAPACK Householder) is independent of cmlab's Gram-Schmidt; QR
is unique up to the sign of each column, which the test allows, so no sign is fixed here.

    /color    [3, 3]     float32, Q[i, j] = row i, column j
    /patch2   [4, 4]     p = 2
    /patch4   [16, 16]   p = 4
"""
import sys

import h5py
import numpy as np


def qr_basis(v):
    n = len(v)
    m = np.eye(n)
    m[:, 0] = v
    q, _ = np.linalg.qr(m)
    return q


def main():
    with h5py.File(sys.argv[1], "w") as f:
        f["color"] = qr_basis(np.array([0.2989, 0.5870, 0.1140])).astype(np.float32)
        for p in (2, 4):
            f[f"patch{p}"] = qr_basis(np.ones(p * p)).astype(np.float32)
    print("edit_bases.py: numpy QR of the colour basis and of the 2x2 and 4x4 patch bases")


if __name__ == "__main__":
    main()
