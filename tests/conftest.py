"""Shared test helpers: small synthetic LAMMPS dumps."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OVITO_THREAD_COUNT", "1")
# no ahead-of-time compiled layers from the machine's cache (~/.cache/trajden/aot): every test, and every CLI
# run a test starts, evaluates as a fresh machine does; tests/model/test_aot.py opts in with its own directory
os.environ["DASK_TRAJDEN__EVALUATOR__AOT_CACHE"] = "off"


def write_dump(path, frames, cell, ids=None, types=None, steps=None, columns="x y z"):
    """Write an orthogonal-box LAMMPS text dump of ``frames`` (list of (N, 3) arrays)."""
    n = len(frames[0])
    ids = np.arange(1, n + 1) if ids is None else ids
    types = np.ones(n, dtype=int) if types is None else types
    with open(path, "w") as fh:
        for k, pos in enumerate(frames):
            step = k * 100 if steps is None else steps[k]
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n")
            for d in range(3):
                fh.write(f"0.0 {cell[d, d]:.10f}\n")
            fh.write(f"ITEM: ATOMS id type {columns}\n")
            for i in range(n):
                fh.write(f"{ids[i]} {types[i]} {pos[i, 0]:.6f} {pos[i, 1]:.6f} {pos[i, 2]:.6f}\n")
    return path


@pytest.fixture(scope="session")
def hot_fcc_dump(tmp_path_factory):
    """4 frames of 500-atom fcc Cu-like crystal with 0.08 d noise; one liquid-like frame in the middle."""
    from trajden.lattices import add_noise, make_crystal

    rng = np.random.default_rng(42)
    c = make_crystal("fcc", 500, d_nn=2.55)
    frames = [add_noise(c.positions, 0.08 * 2.55, rng)[0] for _ in range(4)]
    frames[2] = rng.random((c.n_atoms, 3)) @ c.cell  # an ideal-gas frame: nothing to denoise into a crystal
    path = tmp_path_factory.mktemp("dumps") / "hot_fcc.dump"
    return write_dump(path, frames, c.cell)
