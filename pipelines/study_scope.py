"""How far atoms move when denoised, in scope and out of it: the measurement behind trajden.scope.MoveGuard.

For each input, each frame is denoised (k = 8, scale auto) *without* the guard and the local RMS move of every
atom (its own and its neighbours' within 1.6 nearest-neighbour distances) is measured in units of
``sqrt(3) sigma_max``, the RMS move of a crystal at the model's hottest training noise. Then it is denoised
with the guard (the default) and the atoms it left raw are counted.

Inputs in scope: synthetic fcc/bcc/hcp up to sigma_max, every real-MD fixture of the test suite (LAMMPS, Cu
Mishin EAM: hot crystals up to 1.1 Tm, liquids, a grain boundary beside liquid, Frenkel pairs) and the bundled
solidification run; for a two-element model, the two-element prototypes at 0.08 and sigma_max. Out of scope:
a (10,10) carbon nanotube, C60 in a box, liquid-like water.

    python pipelines/study_scope.py [--models fcc-bcc-hcp binary silica] [--report docs/scope.md]

A model of named elements (``silica``) is chosen only for inputs of exactly its elements; it gets its own
prototypes, the real-MD snapshots of ``pipelines/study_compounds_md.py`` (from that study's cache) and a silica
it was not trained on (stishovite: six O per Si).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trajden import names  # noqa: E402
from trajden.denoise import denoise  # noqa: E402
from trajden.io.readers import Trajectory  # noqa: E402
from trajden.lattices import COMPOUNDS, add_noise, make_crystal  # noqa: E402
from trajden.model.package import load_model  # noqa: E402
from trajden.scope import DEFAULT_RADIUS, MoveGuard  # noqa: E402

FIXTURES = ROOT / "tests" / "data" / "md"


def local_rms(raw, den, cell, nn, radius=DEFAULT_RADIUS):
    from vesin import NeighborList

    d = den - raw
    d -= np.round(d @ np.linalg.inv(cell)) @ cell
    m2 = (d**2).sum(1) / nn**2
    i, j = NeighborList(cutoff=radius * nn, full_list=True).compute(raw, cell, True, "ij")
    total = np.bincount(i, weights=m2[j], minlength=len(raw)) + m2
    return np.sqrt(total / (np.bincount(i, minlength=len(raw)) + 1))


def stishovite(reps: int = 6):
    """Rutile-type SiO2 (stishovite, P4_2/mnm, a = 4.1772, c = 2.6651 A, O at (x, x, 0), x = 0.3062): six O
    around each Si, a silica no trajden model was trained on. Returns (positions, cell, types: 0 Si, 1 O)."""
    a, c, x = 4.1772, 2.6651, 0.3062
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [x, x, 0], [-x, -x, 0], [0.5 + x, 0.5 - x, 0.5],
                     [0.5 - x, 0.5 + x, 0.5]]) % 1.0
    types = np.array([0, 0, 1, 1, 1, 1])
    n = (reps, reps, 2 * reps)
    grid = np.stack(np.meshgrid(*(np.arange(k) for k in n), indexing="ij"), -1).reshape(-1, 3)
    cell1 = np.diag([a, a, c])
    pos = ((grid[:, None, :] + frac[None]) @ cell1).reshape(-1, 3)
    return pos, cell1 * np.array(n)[:, None], np.tile(types, len(grid))


def named_inputs(rng, model):
    """Inputs for a model of named elements (``silica``: chosen only for inputs of exactly its elements): its
    own prototypes at 0.08 and 0.13 bonds, the real-MD snapshots of pipelines/study_compounds_md.py where its
    cache holds them, and one silica it was not trained on (stishovite, ideal and hot)."""
    out = []
    for p in model.metadata["structures"]:
        for sig in (0.08, 0.13):
            c = make_crystal(p, 3000, d_nn=1.61)
            out.append(("in scope", f"{p}, sigma {sig} bonds", add_noise(c.positions, sig * 1.61, rng)[0], c.cell,
                        c.types))
    md = ROOT / "pipelines" / "out" / "compounds-md"
    for p in model.metadata["structures"]:
        path = md / f"{p}.npz"
        if path.exists():
            z = np.load(path)
            for f in sorted({0, len(z["positions"]) - 1}):
                out.append(("real MD (LAMMPS)", f"{p} {float(z['T_K'][f]):.0f} K", z["positions"][f], z["cell"][f],
                            z["types"] - 1))
    pos, cell, types = stishovite()
    out.append(("out of scope", "stishovite (rutile SiO2, six O per Si), ideal", pos, cell, types))
    out.append(("out of scope", "stishovite, sigma 0.08 bonds", add_noise(pos, 0.08 * 1.76, rng)[0], cell, types))
    return out


def inputs(rng, two_element: bool):
    """(group, name, positions, cell, types) for every input."""
    out = []
    for s in ("fcc", "bcc", "hcp"):
        for sig in (0.08, 0.13):
            c = make_crystal(s, 4000, d_nn=2.5)
            out.append(("in scope", f"{s}, sigma {sig} nn", add_noise(c.positions, sig * 2.5, rng)[0], c.cell, None))
    if two_element:
        for p in COMPOUNDS:
            for sig in (0.08, 0.13):
                c = make_crystal(p, 3000, d_nn=2.0)
                out.append(("in scope", f"{p}, sigma {sig} nn", add_noise(c.positions, sig * 2.0, rng)[0], c.cell,
                            c.types))
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    for key, info in manifest.items():
        path = Path(info["file"])
        path = path if path.is_absolute() or path.exists() else FIXTURES / path
        path = path if path.exists() else ROOT / info["file"]
        traj = Trajectory([str(path)])
        for i in sorted({0, len(traj) - 1}):
            f = traj.frame(i)
            types = np.zeros(len(f.positions), dtype=np.int64) if two_element else None
            out.append(("real MD (LAMMPS)", f"{key} frame {i}", f.positions, f.cell, types))
    from ase.build import molecule, nanotube
    from scipy.spatial.transform import Rotation

    t = nanotube(10, 10, length=6)
    t.center(vacuum=6.0, axis=(0, 1))
    c60 = molecule("C60")
    c60.center(vacuum=5.0)
    w = molecule("H2O")
    side, n, pos, typ = 18.6, 6, [], []
    for a in range(n):
        for b in range(n):
            for c in range(n):
                rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
                pos.append((w.positions - w.positions.mean(0)) @ rot.T + (np.array([a, b, c]) + 0.5) * side / n
                           + rng.normal(0, 0.3, 3))
                typ += [1, 0, 0]  # O, H, H
    water_types = np.array(typ) if two_element else None
    out += [("out of scope", "(10,10) carbon nanotube", t.positions, np.array(t.cell), None),
            ("out of scope", "C60 in a box", c60.positions, np.array(c60.cell), None),
            ("out of scope", "water (216 molecules)", np.vstack(pos), np.eye(3) * side, water_types)]
    return out


def study(model_name: str, rng) -> list[dict]:
    model = load_model(model_name)
    guard = MoveGuard()
    unit = np.sqrt(3.0) * model.sigma_max
    rows = []
    todo = named_inputs(rng, model) if model.named_species else inputs(rng, model.num_types > 1)
    for group, name, pos, cell, types in todo:
        row = {"model": model_name, "group": group, "input": name, "n_atoms": len(pos)}
        try:
            free = denoise(pos, cell, types, model, k=8, guard=False)
        except ValueError as exc:  # no length scale: the guard leaves such a frame raw
            free = None
            row["unguarded"] = f"not denoised: {str(exc).split(': ', 1)[-1]}"
        if free is None:
            pass
        elif free.status == names.FRAME_STATUS_DIVERGED:
            row["unguarded"] = "diverged (kept raw)"
        else:
            loc = local_rms(pos, free.positions, cell, free.scale) / unit
            row.update(p50=float(np.median(loc)), p999=float(np.quantile(loc, 0.999)), max=float(loc.max()),
                       min=float(loc.min()))
        res = denoise(pos, cell, types, model, k=8, guard=guard)
        row["kept_raw"] = res.n_kept_raw
        row["status"] = names.FRAME_STATUS_NAMES[res.status]
        d = res.positions - pos
        row["rms_move_A"] = float(np.sqrt((d**2).sum(1).mean()))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def report(rows: list[dict]) -> str:
    kappa = MoveGuard().kappa
    lines = ["# The scope guard, measured", "",
             "Generated by `python pipelines/study_scope.py` (do not edit by hand). Local RMS move: each atom's and "
             f"its neighbours' (within {DEFAULT_RADIUS} nearest-neighbour distances) when denoised without the "
             "guard (k = 8), in units of `sqrt(3) sigma_max` (the RMS move of a crystal at the model's hottest "
             f"training noise). The guard leaves atoms raw above {kappa} and the whole frame raw when more than "
             "half of its atoms are.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "", "| group | input | atoms | local RMS move: min / median / 99.9 % / max | "
                  "with the guard: atoms left raw, status, RMS move |", "|---|---|---|---|---|"]
        for r in (r for r in rows if r["model"] == model):
            free = r.get("unguarded") or f"{r['min']:.2f} / {r['p50']:.2f} / {r['p999']:.2f} / {r['max']:.2f}"
            lines.append(f"| {r['group']} | {r['input']} | {r['n_atoms']} | {free} | {r['kept_raw']}, {r['status']}, "
                         f"{r['rms_move_A']:.3f} A |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fcc-bcc-hcp"])
    p.add_argument("--report", default=str(ROOT / "docs" / "scope.md"))
    p.add_argument("--json", default=str(ROOT / "pipelines" / "out" / "scope.json"))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for m in a.models:
        rows += study(m, np.random.default_rng(7))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rows, indent=1))
    Path(a.report).write_text(report(rows))
    print(f"wrote {a.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
