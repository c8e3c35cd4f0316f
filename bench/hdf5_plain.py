"""Reading HDF5 metadata in Python (``h5plain``) against libhdf5 in a child and an h5py script, whole processes.

    .venv/bin/python bench/hdf5_plain.py [--runs 11]

Rows: ``ckptsurgeon ls F --json`` as it runs (a plain file read in Python), the same command with
``CKPTSURGEON_HDF5_READER=libhdf5`` (libhdf5 in a child, as before), and the script a user would write instead (h5py,
every dataset's name, dtype and shape). The files: tf.keras 2 and Keras 3 fixtures, a third-party Keras 2 file, and
an h5py file of 2,000 datasets made here.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import compare  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H5PY_SCRIPT = ("import sys, h5py\n"
               "f = h5py.File(sys.argv[1], 'r')\n"
               "f.visititems(lambda n, o: print(n, o.dtype, o.shape) if isinstance(o, h5py.Dataset) else None)\n")


def wide(path: str) -> str:
    import h5py
    import numpy as np

    if not os.path.exists(path):
        with h5py.File(path, "w") as f:
            for i in range(2000):
                f.create_dataset(f"layers/{i // 100:02d}/w{i:04d}", data=np.full((4, 4), i, np.float32))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "ckptsurgeon")
    files = [("tf.keras 2 `model.h5` (57 KB)", os.path.join(ROOT, "fixtures/keras/tfkeras/model.h5")),
             ("third-party Keras 2 `weights.h5` (chars2vec)", os.path.join(ROOT, "fixtures/third_party/chars2vec/weights.h5")),
             ("Keras 3 `tiny.keras`", os.path.join(ROOT, "tests/fuzz/seeds/tiny.keras")),
             ("h5py, 2,000 datasets", wide(os.path.join(tempfile.gettempdir(), "ckptsurgeon-bench-wide.h5")))]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: load {os.getloadavg()[0]:.2f}; {args.runs} runs of each after a warm-up, "
          "in turn; wall median (min-max), CPU (children included), peak RSS")
    print("| file | `ckptsurgeon ls --json` | same, `CKPTSURGEON_HDF5_READER=libhdf5` | h5py script | A/B | A/C |")
    print("|---|---|---|---|---|---|")
    for label, path in files:
        a = [exe, "ls", path, "--json"]
        b = ["env", "CKPTSURGEON_HDF5_READER=libhdf5", *a]
        c = [sys.executable, "-c", H5PY_SCRIPT, path] if not path.endswith(".keras") else None
        sa, sb, rab = compare(a, b, args.runs)
        cells = []
        for series in (sa, sb):
            wall, cpu, peak = (series.stat(k) for k in ("wall", "cpu", "peak_mib"))
            cells.append(f"{wall[1]:.3f} s ({wall[0]:.3f}-{wall[2]:.3f}), {cpu[1]:.3f} s, {peak[1]:.0f} MiB")
        rac = "n/a (a zip)"
        if c is not None:
            _, sc, rac_list = compare(a, c, args.runs)
            wall, cpu, peak = (sc.stat(k) for k in ("wall", "cpu", "peak_mib"))
            cells.append(f"{wall[1]:.3f} s ({wall[0]:.3f}-{wall[2]:.3f}), {cpu[1]:.3f} s, {peak[1]:.0f} MiB")
            rac = f"{sorted(rac_list)[len(rac_list) // 2]:.2f}"
        else:
            cells.append("n/a")
        print(f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {sorted(rab)[len(rab) // 2]:.2f} | {rac} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
