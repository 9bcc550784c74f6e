"""Relaxed defect cells for training a defect-aware denoiser (issue 22): ``trajden train`` reads the result.

    python pipelines/train/defect_library.py [--out pipelines/train/defect_library.npz]

Why: on real MD the default model pulls the atoms of point defects and dislocation cores towards lattice
sites and leaves grain-boundary atoms noisy (``pipelines/study_defects.py``). Putting only the defect atoms at
their energy-minimised positions (the "twin") and every other atom where the denoiser put it restores the
twin's a-CNA labels almost exactly (Cu interstitial recall 0.60 -> 1.00, Cu Sigma5 GB precision 0.77 -> 0.94,
Fe loop recall 0.75 -> 0.99), while freezing defect atoms at earlier iterations only trades recall against
precision. So the denoiser has to know where defect atoms sit when the noise is gone: it is shown noisy copies
of relaxed defect cells, and its target there, as for the lattices, is the noise alone.

The cells use potentials that ``pipelines/study_defects.py`` never evaluates on (so every system there, its
hold-outs included, is unseen): Foiles' Ni and Pd (fcc, ``Ni_u3.eam``, ``Pd_u3.eam``) and Zhou's W (bcc,
``W_zhou.eam.alloy``). Each cell is energy-minimised (CG) at its potential's 0 K lattice constant in a fixed
periodic box and stored in nearest-neighbour units (positions and cell divided by the ideal nn distance):
vacancy, divacancy, split interstitial (fcc <100>, bcc <110>), Frenkel pair, Sigma5 (310)[001] bicrystal and,
in bcc, a small 1/2<111> prismatic loop. Each atom is flagged ``defect`` where a-CNA does not call the relaxed
cell's host lattice; training weights those atoms up (``library_defect_weight``), since they are a few percent
of each cell.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md import structures  # noqa: E402
from pipelines.md import study_common as sc  # noqa: E402

LIBRARY_POTENTIALS = {
    "Ni": sc.Potential("Ni", "eam", "Ni_u3.eam", 58.71, 0.0, "fcc", 3.52, "Foiles et al. (1986), Ni_u3.eam"),
    "Pd": sc.Potential("Pd", "eam", "Pd_u3.eam", 106.4, 0.0, "fcc", 3.89, "Foiles et al. (1986), Pd_u3.eam"),
    "W": sc.Potential("W", "eam/alloy", "W_zhou.eam.alloy", 183.84, 0.0, "bcc", 3.157,
                      "Zhou et al. (2001), W_zhou.eam.alloy"),
}


def cells_for(el: str, pot: sc.Potential):
    a, kind = pot.a0, pot.lattice
    out = [("vacancy", structures.vacancy(a, 4, kind)[0]), ("divacancy", structures.divacancy(a, 4, kind)[0])]
    if kind == "fcc":
        out += [("interstitial", structures.split_interstitial(a, 4, kind)[0]),
                ("frenkel", structures.frenkel_pair(a, 5, kind)[0]),
                ("sigma5", structures.sigma5_bicrystal(a, 2, 1, 2)[0])]
    else:
        out += [("interstitial", structures.split_interstitial(a, 5, kind)[0]),
                ("frenkel", structures.frenkel_pair(a, 6, kind)[0]),
                ("sigma5", structures.sigma5_bicrystal(a, 2, 1, 3, kind="bcc")[0]),
                ("loop", structures.prismatic_loop_bcc(a, 7, 4.5)[0])]
    return [(f"{el}-{kind}-{name}", s) for name, s in out]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "pipelines" / "train" / "defect_library.npz")
    args = ap.parse_args(argv)
    t0 = time.time()
    from trajden import names as codes
    from trajden.classify import acna

    names, kinds, pos, cells, counts, defect = [], [], [], [], [], []
    for el, pot in LIBRARY_POTENTIALS.items():
        nn = structures.nn_distance(pot.lattice, pot.a0)
        host = codes.FCC if pot.lattice == "fcc" else codes.BCC
        for name, s in cells_for(el, pot):
            r = sc.minimise(s, pot, ftol=1e-8, maxiter=20000)
            p = np.mod(r.positions - r.origin, np.diag(r.cell))
            names.append(name)
            kinds.append(pot.lattice)
            pos.append((p / nn).astype(np.float32))
            cells.append((r.cell / nn).astype(np.float32))
            counts.append(len(p))
            # the atoms a-CNA does not call the host lattice at 0 K: weighted up in training (few per cell)
            defect.append(acna(r.positions, r.cell, r.origin) != host)
            print(f"{name:24s} {len(p):5d} atoms, {int(defect[-1].sum()):4d} defect atoms, "
                  f"fnorm {r.info['min_fnorm']:.1e} eV/A, "
                  f"largest relaxation {sc.displacement(s, r).max() / nn:.3f} nn", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, names=np.array(names), lattices=np.array(kinds), counts=np.array(counts),
                        positions=np.concatenate(pos), cells=np.stack(cells), defect=np.concatenate(defect),
                        potentials=np.array([f"{el}: {p.citation}" for el, p in LIBRARY_POTENTIALS.items()]))
    print(f"wrote {args.out}: {len(names)} cells, {sum(counts)} atoms ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
