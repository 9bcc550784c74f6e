"""Throughput of trajden's LAMMPS dump reader against MDAnalysis' own ``LAMMPSDUMP`` reader.

Writes a synthetic dump (default 2 frames of 1e6 atoms, ``id type x y z`` with 6-7 significant digits,
like LAMMPS' default ``%g`` output) plain and gzip-compressed into a temporary folder, and prints atoms/s
for reading one frame (index built beforehand, reported separately), all frames in order, and all frames
through :meth:`trajden.io.readers.Trajectory.frame` (the pipeline's path)::

    .venv/bin/python pipelines/bench_reader.py [--atoms 1000000] [--frames 2] [--no-mda]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from trajden.io.dump_writer import write_dump as write_frames
from trajden.io.lammps_dump import LammpsDump, build_index
from trajden.io.readers import Trajectory


def write_dump(path: str, n_atoms: int, n_frames: int, seed: int = 0) -> None:
    """A LAMMPS-like dump of an orthogonal 100 x 100 x 100 box, atoms in shuffled id order."""
    rng = np.random.default_rng(seed)

    def frames():
        for frame in range(n_frames):
            ids = rng.permutation(n_atoms) + 1
            xyz = np.round(rng.random((n_atoms, 3)) * 100.0, 4)
            yield {"positions": xyz, "ids": ids, "types": ids % 2 + 1, "step": frame * 1000}

    # pyarrow's shortest float text ("0 100" bounds) and the trailing space LAMMPS writes on every atom line
    write_frames(path, frames(), cell=np.diag([100.0, 100.0, 100.0]), float_format=None, bounds_format="g",
                 trailing_space=True)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(path: str, n_atoms: int, mda: bool, repeat: int) -> None:
    size = os.path.getsize(path) / 1e6
    print(f"\n{os.path.basename(path)}  ({size:.0f} MB on disk)")
    t_index = best_of(lambda: build_index(path), 1)
    dump = LammpsDump(path)
    dump.index  # noqa: B018
    t_read = best_of(lambda: dump.read(dump.n_frames - 1), repeat)
    print(f"  trajden   index {t_index:6.2f} s   read frame {t_read:6.3f} s   {n_atoms / t_read / 1e6:7.2f} M atoms/s")
    t_all = best_of(lambda: [dump.read(i) for i in range(dump.n_frames)], 1)
    rate = n_atoms * dump.n_frames / t_all / 1e6
    print(f"  trajden   all {dump.n_frames} frames in order {t_all:6.3f} s                  {rate:7.2f} M atoms/s")
    traj = Trajectory(path)  # the pipeline's path: TrajdenDumpReader's Timestep -> Frame
    t_traj = best_of(lambda: [traj.frame(i) for i in range(traj.n_frames)], repeat)
    rate = n_atoms * traj.n_frames / t_traj / 1e6
    print(f"  Trajectory.frame all {traj.n_frames} frames {t_traj:6.3f} s                        {rate:7.2f} M atoms/s")
    if mda:
        import MDAnalysis

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            u = MDAnalysis.Universe(path, format="LAMMPSDUMP")
            len(u.trajectory)
            t_open = time.perf_counter() - t0
            last = len(u.trajectory) - 1
            t_mda = best_of(lambda: u.trajectory[last], 1)
        print(
            f"  MDAnalysis open  {t_open:6.2f} s   read frame {t_mda:6.3f} s   {n_atoms / t_mda / 1e6:7.2f} M atoms/s"
        )
        print(f"  speed-up x{t_mda / t_read:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many reads (trajden)")
    ap.add_argument("--no-mda", action="store_true", help="skip the (slow) MDAnalysis reader")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="trajden-bench-")
    try:
        plain = os.path.join(tmp, "bench.dump")
        t0 = time.perf_counter()
        write_dump(plain, args.atoms, args.frames)
        with open(plain, "rb") as src, gzip.open(plain + ".gz", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
        print(
            f"wrote {args.frames} frames x {args.atoms} atoms in {time.perf_counter() - t0:.1f} s "
            f"(cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f})"
        )
        for path in (plain, plain + ".gz"):
            bench(path, args.atoms, not args.no_mda, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
