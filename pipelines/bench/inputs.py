"""Benchmark inputs: synthetic hot-fcc and crystal/liquid Cu frames, written as LAMMPS text dumps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.bench.common import D_NN, LIQ_ALPHA, LIQ_R0, LIQ_SWEEPS, SIGMA_HOT, SIGMA_LIQ, SYSTEMS

# ------------------------------------------------------------------------------------------------
# synthetic systems and dumps


def _soft_relax(pos: np.ndarray, cell: np.ndarray, movable: np.ndarray) -> np.ndarray:
    """Soft-sphere relaxation of the movable atoms: pairs closer than ``LIQ_R0`` are pushed apart.

    Every sweep moves each pair apart by ``LIQ_ALPHA`` of its overlap (split between movable partners), for
    ``LIQ_SWEEPS`` sweeps: the 0.3 d_nn noise's overlaps are resolved without piling pair distances up at a
    hard core, so the liquid's g(r) has a broad first peak near d_nn and no pairs below about 0.7 d_nn.
    """
    from vesin import NeighborList

    n = len(pos)
    r0 = LIQ_R0 * D_NN
    nl = NeighborList(cutoff=float(r0), full_list=False)
    for _ in range(LIQ_SWEEPS):
        i, j, vec = nl.compute(pos, cell, True, "ijD")  # vec = r_j - r_i (+ shift)
        sel = movable[i] | movable[j]
        i, j, vec = i[sel], j[sel], vec[sel]
        d = np.maximum(np.linalg.norm(vec, axis=1), 1e-3)
        both = movable[i] & movable[j]
        wi = np.where(movable[i], np.where(both, 0.5, 1.0), 0.0)
        wj = np.where(movable[j], np.where(both, 0.5, 1.0), 0.0)
        push = LIQ_ALPHA * (r0 - d) / d
        disp = np.zeros_like(pos)
        for ax in range(3):
            disp[:, ax] -= np.bincount(i, weights=wi * push * vec[:, ax], minlength=n)
            disp[:, ax] += np.bincount(j, weights=wj * push * vec[:, ax], minlength=n)
        pos = pos + disp
    return pos


def make_system(system: str, n_target: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, cell, liquid mask) of ``system`` with about ``n_target`` atoms, wrapped into the cell."""
    from trajden.lattices import add_noise, make_crystal

    c = make_crystal("fcc", n_target, d_nn=D_NN)
    rng = np.random.default_rng(seed)
    pos, _ = add_noise(c.positions, SIGMA_HOT * D_NN, rng)
    liquid = np.zeros(len(pos), dtype=bool)
    if system == "mixture":
        liquid = c.positions[:, 0] >= 0.5 * c.cell[0, 0]
        pos[liquid] = add_noise(c.positions[liquid], SIGMA_LIQ * D_NN, rng)[0]
        pos = _soft_relax(pos, c.cell, liquid)
    elif system != "hot-fcc":
        raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")
    lengths = np.diag(c.cell)
    pos = np.mod(pos, lengths)
    return pos, c.cell, liquid


def write_dump(path: Path, frames: list[np.ndarray], cell: np.ndarray, seed: int) -> None:
    """LAMMPS text dump (``id type x y z``, 4 decimals, atoms in shuffled id order as from an MPI run)."""
    from trajden.io.dump_writer import write_dump as write_frames

    rng = np.random.default_rng(seed)

    def shuffled():
        for k, pos in enumerate(frames):
            perm = rng.permutation(len(pos))
            yield {"positions": np.round(pos[perm], 4), "ids": perm + 1, "step": k * 1000}

    # pyarrow's shortest float text, box bounds as repr, the trailing space LAMMPS writes on every atom line
    write_frames(path, shuffled(), cell=np.diag(np.diag(cell)), float_format=None, bounds_format="",
                 trailing_space=True)


def prepare_inputs(tmp: Path, system: str, n_target: int, n_e2e_frames: int, need_e2e: bool,
                   atom_order: str = "shuffled") -> dict:
    """Write the frame (npz + one-frame dump) and, if needed, the multi-frame dump for ``e2e``.

    ``atom_order``: ``"shuffled"`` numbers the atoms (ids, and the order of the npz and of the frames read
    back) in random order, as in a run whose ids were scrambled by melting or diffusion; ``"lattice"`` keeps
    the lattice's own order (neighbours mostly close in memory).
    """
    seed = n_target * 7 + SYSTEMS.index(system)
    pos, cell, liquid = make_system(system, n_target, seed)
    perm = (np.random.default_rng(seed + 7).permutation(len(pos)) if atom_order == "shuffled"
            else np.arange(len(pos)))
    pos, liquid = pos[perm], liquid[perm]
    stem = tmp / f"{system}-{n_target}"
    np.savez(f"{stem}.npz", positions=pos, cell=cell, types=np.ones(len(pos), dtype=np.int32), liquid=liquid)
    write_dump(Path(f"{stem}.dump"), [pos], cell, seed)
    out = {"npz": f"{stem}.npz", "dump": f"{stem}.dump", "n_atoms": len(pos), "cell": cell.tolist()}
    if need_e2e:
        frames = [pos] + [make_system(system, n_target, seed + 1000 * k)[0][perm] for k in range(1, n_e2e_frames)]
        write_dump(Path(f"{stem}-e2e.dump"), frames, cell, seed + 1)
        out["dump_e2e"] = f"{stem}-e2e.dump"
    if system == "mixture":
        from vesin import NeighborList

        i, d = NeighborList(cutoff=0.9 * D_NN, full_list=True).compute(pos, cell, True, "id")
        out["min_pair_distance_dnn"] = round(float(d.min() / D_NN), 3) if len(d) else 0.9
        out["liquid_pairs_below_0.8dnn_per_atom"] = round(float(np.sum(d[liquid[i]] < 0.8 * D_NN)) / liquid.sum(), 4)
    out["dump_mb"] = os.path.getsize(out["dump"]) / 1e6
    return out
