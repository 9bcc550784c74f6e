"""Two-element crystals through `trajden process` with its defaults (issue 19's table), and what it refuses.

For each prototype a crystal with real lattice constants is given Gaussian noise of 0.08 x its shortest bond
per coordinate, written as a LAMMPS dump with an ``element`` column, and processed by the CLI with every
default (``trajden process X.dump --out X.zarr``). Measured per case:

* the RMS distance to the ideal lattice before and after (rigid translation removed) and the fraction of the
  thermal RMS removed;
* PTM labels right after denoising: all atoms (B2 bcc, L1_0/L1_2 fcc, rocksalt sc, zincblende cubic diamond,
  wurtzite hexagonal diamond) or one sublattice (Ca of fluorite fcc, Si of beta-cristobalite cubic diamond);
* the model trajden chose, and the atoms it left raw.

Then the rocksalt case as a types-only dump: with ``--species Na,Cl`` the same result, without it a one-line
error; and out-of-scope inputs (a (10,10) carbon nanotube, C60 in a box, liquid water, a three-element
crystal) must be left in place (RMS move <= 0.05 A) with exit 0.

The silica crystals (default ``silica-networks``) are also run with the opt-in models ``silica`` and ``binary``
(``--also-model``), on the same noise.

    python pipelines/study_compounds.py --out pipelines/out/compounds     # writes docs/compounds.md too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trajden import names  # noqa: E402
from trajden.io.lammps_dump import format_frame  # noqa: E402
from trajden.lattices import PROTOTYPE_PTM, make_crystal  # noqa: E402

SIGMA = 0.08  # x the shortest bond, per coordinate

#: name, prototype, (A, B) elements, shortest bond in angstrom (room-temperature lattice constants)
CASES = [
    ("B2 NiAl", "b2", ("Ni", "Al"), 2.887 * np.sqrt(3) / 2),
    ("L1_2 Ni3Al", "l12", ("Ni", "Al"), 3.572 / np.sqrt(2)),
    ("L1_0 CuAu (c/a = 1)", "l10", ("Cu", "Au"), 3.96 / np.sqrt(2)),
    ("rocksalt NaCl", "b1", ("Na", "Cl"), 5.640 / 2),
    ("zincblende GaAs", "b3", ("Ga", "As"), 5.653 * np.sqrt(3) / 4),
    ("wurtzite GaN (ideal)", "b4", ("Ga", "N"), 3.189 * np.sqrt(3 / 8)),
    ("fluorite CaF2", "c1", ("Ca", "F"), 5.463 * np.sqrt(3) / 4),
    ("beta-cristobalite SiO2", "beta-cristobalite", ("Si", "O"), 7.16 * np.sqrt(3) / 8),
    ("alpha-cristobalite SiO2", "alpha-cristobalite", ("Si", "O"), 1.603),
    ("alpha-quartz SiO2", "alpha-quartz", ("Si", "O"), 1.605),
    ("beta-quartz SiO2", "beta-quartz", ("Si", "O"), 1.587),
]


def _lower_triangular(positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a cell into LAMMPS' restricted triclinic form (a along x, b in the xy plane)."""
    q, r = np.linalg.qr(cell.T)
    signs = np.sign(np.diag(r))
    rot = (q * signs).T  # rows: new axes
    return positions @ rot.T, cell @ rot.T


def write_dump(path: Path, positions, cell, elements=None, types=None) -> None:
    positions, cell = _lower_triangular(np.asarray(positions), np.asarray(cell))
    cell[np.abs(cell) < 1e-12] = 0.0
    path.write_text(format_frame(positions, cell, types=types, elements=elements))


def trajden(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "trajden.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def rms_to(ideal: np.ndarray, positions: np.ndarray, cell: np.ndarray) -> float:
    d = positions - ideal
    d -= np.round(d @ np.linalg.inv(cell)) @ cell
    d -= d.mean(axis=0)  # a rigid translation is not noise
    return float(np.sqrt((d**2).sum(axis=1).mean()))


def _open(store: Path):
    import xarray as xr

    return xr.open_zarr(store, consolidated=False)


def run_case(out: Path, name: str, proto: str, elements: tuple[str, str], bond: float, rng, n_atoms: int,
             model: str | None = None):
    from trajden.classify import ptm

    c = make_crystal(proto, n_atoms, d_nn=bond)
    ideal, cell = _lower_triangular(c.positions, c.cell)
    noisy = ideal + SIGMA * bond * rng.standard_normal(ideal.shape)
    el = np.array(elements)[c.types]
    tag = proto if model is None else f"{proto}.{model}"
    dump = out / f"{tag}.dump"
    write_dump(dump, noisy, cell, elements=el, types=c.types + 1)
    t0 = time.perf_counter()
    chosen = [] if model is None else ["--model", model]
    proc = trajden("process", str(dump), "--out", str(out / f"{tag}.zarr"), "--overwrite", "--quiet", *chosen, cwd=out)
    wall = time.perf_counter() - t0
    row = {"case": name, "prototype": proto, "n_atoms": c.n_atoms, "bond_A": bond, "exit": proc.returncode,
           "wall_s": wall}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        return row
    ds = _open(out / f"{tag}.zarr")
    den = ds[names.VAR_POSITIONS].values[0].astype(np.float64)
    row["model"] = ds.attrs.get(names.ATTR_MODEL)
    row["model_species"] = ds.attrs.get(names.ATTR_MODEL_SPECIES)
    row["rms_raw_A"] = rms_to(ideal, noisy, cell)
    row["rms_denoised_A"] = rms_to(ideal, den, cell)
    row["removed"] = 1.0 - row["rms_denoised_A"] / row["rms_raw_A"]
    row["kept_raw"] = int(ds[names.VAR_N_KEPT_RAW].values[0]) if names.VAR_N_KEPT_RAW in ds else None
    row["status"] = names.FRAME_STATUS_NAMES[int(ds[names.VAR_STATUS].values[0])]
    row["scale_error"] = float(ds[names.VAR_SCALE].values[0]) / bond - 1.0  # one scale per frame: the shortest bond
    if proto in PROTOTYPE_PTM:
        role, label = PROTOTYPE_PTM[proto]
        code = names.STRUCTURE_CODES[label]
        if role is None:
            got = ds[names.structure_var(names.PTM)].values[0]
            raw = ds[names.structure_var(names.PTM, raw=True)].values[0]
        else:
            sel = c.types == role
            got = ptm(den[sel], cell)
            raw = ptm(noisy[sel], cell)
        row["ptm_expected"] = label + ("" if role is None else f" ({elements[role]} sublattice)")
        row["ptm_right"] = float(np.mean(got == code))
        row["ptm_right_raw"] = float(np.mean(raw == code))
    return row


def species_checks(out: Path, rng, n_atoms: int) -> dict:
    """Rocksalt as a types-only dump: --species gives the element-column result; without it, one error line."""
    c = make_crystal("b1", n_atoms, d_nn=2.82)
    noisy = c.positions + SIGMA * 2.82 * rng.standard_normal(c.positions.shape)
    el = np.array(["Na", "Cl"])[c.types]
    write_dump(out / "nacl-types.dump", noisy, c.cell, types=c.types + 1)
    write_dump(out / "nacl-elements.dump", noisy, c.cell, elements=el, types=c.types + 1)
    a = trajden("process", "nacl-types.dump", "--species", "Na,Cl", "--out", "a.zarr", "--overwrite", "--quiet",
                cwd=out)
    b = trajden("process", "nacl-elements.dump", "--out", "b.zarr", "--overwrite", "--quiet", cwd=out)
    e = trajden("process", "nacl-types.dump", "--out", "e.zarr", "--overwrite", "--quiet", cwd=out)
    same = None
    if a.returncode == 0 and b.returncode == 0:
        pa = _open(out / "a.zarr")[names.VAR_POSITIONS].values
        pb = _open(out / "b.zarr")[names.VAR_POSITIONS].values
        same = float(np.abs(pa - pb).max())
    err = [ln for ln in e.stderr.strip().splitlines() if ln.startswith("trajden: error")]
    return {"with_species_exit": a.returncode, "elements_exit": b.returncode, "max_position_difference_A": same,
            "without_species_exit": e.returncode, "without_species_error": err[-1] if err else e.stderr.strip(),
            "without_species_store_written": (out / "e.zarr").exists(),
            "traceback": "Traceback" in e.stderr}


def out_of_scope(out: Path, rng) -> list[dict]:
    """Inputs the models do not know: each must be left in place (RMS move <= 0.05 A) with exit 0."""
    from ase.build import molecule, nanotube
    from scipy.spatial.transform import Rotation

    cases = []
    t = nanotube(10, 10, length=6)
    t.center(vacuum=6.0, axis=(0, 1))
    cases.append(("(10,10) carbon nanotube, ideal", t.positions, np.array(t.cell), t.get_chemical_symbols()))
    m = molecule("C60")
    m.center(vacuum=5.0)
    cases.append(("C60 in a box", m.positions, np.array(m.cell), m.get_chemical_symbols()))
    w = molecule("H2O")
    side, n = 18.6, 6
    pos, sym = [], []
    for i in range(n):
        for j in range(n):
            for k in range(n):
                rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
                pos.append((w.positions - w.positions.mean(0)) @ rot.T + (np.array([i, j, k]) + 0.5) * side / n
                           + rng.normal(0, 0.3, 3))
                sym += w.get_chemical_symbols()
    cases.append(("liquid-like water (216 molecules)", np.vstack(pos), np.eye(3) * side, sym))
    c = make_crystal("fcc", 2000, d_nn=2.55)
    tri = np.array(["Cu", "Ni", "Al"])[rng.integers(0, 3, c.n_atoms)]
    cases.append(("fcc CuNiAl, three elements", c.positions + 0.2 * rng.standard_normal(c.positions.shape),
                  c.cell, list(tri)))
    rows = []
    for k, (name, p, cell, sym) in enumerate(cases):
        dump = out / f"oos{k}.dump"
        write_dump(dump, p, cell, elements=np.array(sym), types=np.unique(sym, return_inverse=True)[1] + 1)
        proc = trajden("process", str(dump), "--out", f"oos{k}.zarr", "--overwrite", "--quiet", "--keep-raw",
                       cwd=out)
        row = {"case": name, "n_atoms": len(p), "exit": proc.returncode}
        if proc.returncode == 0:
            ds = _open(out / f"oos{k}.zarr")
            den = ds[names.VAR_POSITIONS].values[0].astype(np.float64)
            raw = ds[names.VAR_POSITIONS_RAW].values[0].astype(np.float64)
            row["rms_move_A"] = float(np.sqrt(((den - raw) ** 2).sum(1).mean()))
            row["kept_raw"] = int(ds[names.VAR_N_KEPT_RAW].values[0])
            row["status"] = names.FRAME_STATUS_NAMES[int(ds[names.VAR_STATUS].values[0])]
            row["model"] = ds.attrs.get(names.ATTR_MODEL)
        else:
            row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        rows.append(row)
    return rows


def report(res: dict) -> str:
    lines = ["# Two-element crystals and out-of-scope inputs", "",
             "Generated by `python pipelines/study_compounds.py` (do not edit by hand). Each crystal: Gaussian noise "
             f"of {SIGMA} x its shortest bond per coordinate, a LAMMPS dump with an `element` column, "
             "`trajden process X.dump --out X.zarr` with every default; rows marked `--model M` add that "
             "opt-in model on the same noisy crystal.", "",
             "| crystal | atoms | model chosen | length scale - shortest bond | RMS to ideal, raw -> denoised | "
             "thermal RMS removed | PTM right after (raw) | atoms left raw |", "|---|---|---|---|---|---|---|---|"]
    for r in res["crystals"]:
        if r.get("exit"):
            lines.append(f"| {r['case']} | {r['n_atoms']} | exit {r['exit']}: {r.get('error', '')} | | | | | |")
            continue
        ptm_txt = (f"{r['ptm_right'] * 100:.2f} % {r['ptm_expected']} ({r['ptm_right_raw'] * 100:.1f} %)"
                   if "ptm_right" in r else "-")
        lines.append(f"| {r['case']} | {r['n_atoms']} | {r['model']} | {r['scale_error'] * 100:+.1f} % | "
                     f"{r['rms_raw_A']:.3f} -> "
                     f"{r['rms_denoised_A']:.3f} A | {r['removed'] * 100:.1f} % | {ptm_txt} | {r['kept_raw']} |")
    s = res["species"]
    lines += ["", "Rocksalt NaCl as a types-only dump: with `--species Na,Cl` exit "
              f"{s['with_species_exit']}, positions differ from the element-column run by at most "
              f"{s['max_position_difference_A']} A; without `--species` exit {s['without_species_exit']}, "
              f"store written: {s['without_species_store_written']}, traceback: {s['traceback']}:", "",
              f"    {s['without_species_error']}", "",
              "Out-of-scope inputs (`trajden process` with defaults and `--keep-raw`):", "",
              "| input | atoms | exit | model | status | atoms left raw | RMS move |", "|---|---|---|---|---|---|---|"]
    for r in res["out_of_scope"]:
        if r.get("exit"):
            lines.append(f"| {r['case']} | {r['n_atoms']} | {r['exit']}: {r.get('error', '')} | | | | |")
        else:
            lines.append(f"| {r['case']} | {r['n_atoms']} | 0 | {r['model']} | {r['status']} | {r['kept_raw']} | "
                         f"{r['rms_move_A']:.4f} A |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="pipelines/out/compounds")
    p.add_argument("--atoms", type=int, default=3000, help="atoms per crystal (about)")
    p.add_argument("--report", default=str(ROOT / "docs" / "compounds.md"))
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--also-model", nargs="*", default=["silica", "binary"], metavar="MODEL",
                   help="other models also run (--model MODEL) as extra rows, on the crystals they can take "
                   "(a model of named elements: exactly its elements) whose default is another model "
                   "(default: silica binary)")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    crystals = []
    for name, proto, el, bond in CASES:
        state = rng.bit_generator.state  # opt-in runs: the same noise; the defaults' draws stay as they were
        row = run_case(out, name, proto, el, bond, rng, a.atoms)
        print(json.dumps(row), flush=True)
        crystals.append(row)
        for extra in a.also_model:
            from trajden.model.coverage import choose_model
            from trajden.model.package import load_model

            m = load_model(extra)
            # a model that can take the crystal's elements (named ones: exactly its elements) and is not the
            # one the defaults chose
            takes = (set(m.named_species) == set(el) if m.named_species
                     else len(m.metadata["species"]) == len(set(el)))
            if takes and m.name != choose_model(np.array(el)):
                after = rng.bit_generator.state
                rng.bit_generator.state = state
                row = run_case(out, f"{name} (--model {extra})", proto, el, bond, rng, a.atoms, model=extra)
                rng.bit_generator.state = after
                print(json.dumps(row), flush=True)
                crystals.append(row)
    res = {"crystals": crystals, "species": species_checks(out, rng, a.atoms), "out_of_scope": out_of_scope(out, rng)}
    print(json.dumps(res["species"]), flush=True)
    for r in res["out_of_scope"]:
        print(json.dumps(r), flush=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    Path(a.report).write_text(report(res))
    print(f"wrote {a.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
