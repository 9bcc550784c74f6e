"""A crystal nucleus growing in an undercooled Cu melt (Mishin EAM), run from Python, for studies 3 and 4.

Protocol (as ``make_cu_solidification`` in pipelines/make_fixtures.py, scaled): an fcc box with lattice constant
3.68 A (liquid density near 0.77 Tm); atoms outside a central sphere are melted at 3000 K (NVT, the sphere held
fixed), cooled to T and held there; then the seed is released with velocities at T and everything runs NPT
(iso, P = 0, dt 2 fs). Frames are taken every ``every_ps``; around each frame a burst of ``2 * half + 1``
configurations ``burst_fs`` apart can be kept for vibration averaging (the frame is the burst's centre).
The final state (positions and velocities) is written as a LAMMPS data file so a later study can continue it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.md import study_common as sc

A_MELT = 3.68


@dataclass
class SolidificationRun:
    frames: list  # Snapshot per frame (the burst centres)
    bursts: list  # list (per frame) of lists of Snapshots (empty lists without bursts)
    thermo: list  # dict per frame
    data_file: Path | None
    info: dict = field(default_factory=dict)


def run(cells: int, r_seed: float, T_over_Tm: float = 0.77, frames: int = 12, every_ps: float = 2.0,
        melt_ps: float = 2.0, cool_ps: float = 2.0, hold_ps: float = 1.0, settle_ps: float = 0.4,
        half: int = 0, burst_fs: float = 20.0, threads: int = 1, seed: int = 66083,
        data_file: Path | None = None) -> SolidificationRun:
    """Run the protocol; ``cells`` fcc cells per axis (4 cells^3 atoms)."""
    pot = sc.CU
    T = round(T_over_Tm * pot.Tm, 1)
    t0 = time.time()
    lmp = sc.lammps(threads)
    sc.setup_lattice(lmp, pot, "fcc", A_MELT, (cells, cells, cells))
    c = cells * A_MELT / 2
    dt_melt, dt = 0.001, 0.002
    lmp.commands_string(
        f"""region seed sphere {c} {c} {c} {r_seed} units box
group seed region seed
group melt subtract all seed
variable nseed equal count(seed)
timestep {dt_melt}
velocity melt create 3000 {seed} mom yes rot yes dist gaussian
velocity seed set 0 0 0
fix hold seed setforce 0 0 0
fix md melt nvt temp 3000 3000 0.1
run {round(melt_ps / dt_melt)}
unfix md
timestep {dt}
fix md melt nvt temp 3000 {T} 0.2
run {round(cool_ps / dt)}
unfix md
fix md melt nvt temp {T} {T} 0.2
run {round(hold_ps / dt)}
unfix md
unfix hold
velocity seed create {T} {seed + 8} mom yes rot yes dist gaussian
fix md all npt temp {T} {T} 0.2 iso 0 0 1.0
run {round(settle_ps / dt)}
reset_timestep 0
"""
    )
    n_seed = int(lmp.extract_variable("nseed"))
    prep_s = time.time() - t0
    every = round(every_ps / dt)
    b = max(1, round(burst_fs / 1000 / dt))
    out_frames, bursts, thermo = [], [], []
    for i in range(frames):
        target = i * every + half * b
        now = int(lmp.get_thermo("step"))
        first = target - half * b
        lmp.commands_string(f"run {first - now}" if first > now else "run 0 post no")  # tally energies
        burst = []
        for j in range(-half, half + 1):
            step = int(lmp.get_thermo("step"))
            burst.append(sc.snapshot(lmp, step=step, time_ps=round(step * dt, 6)))
            if j == 0:
                thermo.append(sc.thermo(lmp))
            if j < half:
                lmp.commands_string(f"run {b}")
        out_frames.append(burst[half])
        bursts.append(burst if half else [])
    if data_file is not None:
        Path(data_file).parent.mkdir(parents=True, exist_ok=True)
        lmp.commands_string(f"write_data {data_file}")
    natoms = int(lmp.get_natoms())
    lmp.close()
    info = {"atoms": natoms, "cells": cells, "seed_radius_A": r_seed, "n_seed_atoms": n_seed, "T_K": T,
            "T_over_Tm": T_over_Tm, "frames": frames, "every_ps": every_ps, "dt_ps": dt,
            "burst": {"frames": 2 * half + 1, "spacing_fs": b * dt * 1000} if half else None,
            "prep_seconds": round(prep_s, 1), "md_seconds": round(time.time() - t0, 1),
            "protocol": f"fcc a = {A_MELT} A, {cells}^3 cells; melt outside a fixed r = {r_seed} A seed at 3000 K "
            f"NVT {melt_ps} ps (dt 1 fs), cool to {T} K over {cool_ps} ps, hold {hold_ps} ps (dt 2 fs); "
            "release the seed, "
            f"NPT iso P = 0 at {T} K (dt 2 fs), {settle_ps} ps settling, frames every {every_ps} ps"}
    return SolidificationRun(out_frames, bursts, thermo, Path(data_file) if data_file else None, info)


def continue_burst(data_file: Path, T: float, n_frames: int, spacing_fs: float = 20.0, threads: int = 1,
                   settle_ps: float = 0.0) -> list:
    """Continue a run written by :func:`run` (NPT at T, dt 2 fs) and return ``n_frames`` snapshots
    ``spacing_fs`` apart (the first one at the data file's state after ``settle_ps``)."""
    pot = sc.CU
    lmp = sc.lammps(threads)
    dt = 0.002
    lmp.commands_string(
        f"""units metal
atom_style atomic
atom_modify map array sort 0 0.0
boundary p p p
read_data {data_file}
"""
        + f"mass * {pot.mass}\n{pot.pair_lines()}neighbor 1.0 bin\nneigh_modify every 1 delay 0 check yes\nthermo 0\n"
        + f"""timestep {dt}
fix md all npt temp {T} {T} 0.2 iso 0 0 1.0
reset_timestep 0
"""
    )
    if settle_ps > 0:
        lmp.commands_string(f"run {round(settle_ps / dt)}")
    b = max(1, round(spacing_fs / 1000 / dt))
    out = []
    for j in range(n_frames):
        step = int(lmp.get_thermo("step"))
        out.append(sc.snapshot(lmp, step=step, time_ps=round(step * dt, 6)))
        if j < n_frames - 1:
            lmp.commands_string(f"run {b}")
    lmp.close()
    return out


def _wrapped(positions: np.ndarray, cell: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    L = np.diag(cell).astype(np.float64)
    x = np.mod(np.asarray(positions, dtype=np.float64) - origin, L)
    return np.where(x >= L, x - L, x), L


def largest_cluster(positions: np.ndarray, cell: np.ndarray, origin: np.ndarray, mask: np.ndarray,
                    cutoff: float) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Largest cluster of the atoms in ``mask`` (:func:`trajden.analysis.largest_cluster`) and its centre.

    Returns (size, boolean member mask over all atoms, centre (3,) in box coordinates incl. origin or None;
    periodic orthogonal box, circular mean per axis).
    """
    from trajden.analysis import largest_cluster as members_of_largest

    members = members_of_largest(positions, cell, mask, cutoff)
    if not members.any():
        return 0, members, None
    x, L = _wrapped(positions[members], cell, origin)
    theta = 2 * np.pi * x / L
    centre = L * (np.arctan2(np.sin(theta).mean(0), np.cos(theta).mean(0)) % (2 * np.pi)) / (2 * np.pi)
    return int(members.sum()), members, centre + origin


def distance_from(positions: np.ndarray, cell: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Minimum-image distance of every atom from ``point``."""
    return np.linalg.norm(sc.min_image(np.asarray(positions) - point, cell), axis=1)
