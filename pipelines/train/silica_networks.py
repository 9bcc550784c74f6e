"""Tilted silica networks for training a silica denoiser (issue 19): ``trajden train`` reads the result.

    python pipelines/train/silica_networks.py [--out pipelines/train/silica_networks.npz] [--per-polymorph 48]

Why: the ideal polymorphs fix each Si-O-Si angle (180 deg in idealised beta-cristobalite, 144-153 deg in the
others), but a hot silica framework is a network of nearly rigid SiO4 tetrahedra whose tilts (the rigid-unit
modes, Si-O-Si angles) vary from place to place. Real Munetoh-Tersoff MD of all four polymorphs, energy-
minimised, sits at Si-Si / Si-O = 1.93 (Si-O-Si 149-151 deg) with the tetrahedra regular to 0.003 A
(``pipelines/study_compounds_md.py``); a model trained on the ideal structures alone straightens the bonds of
beta-cristobalite and shortens its Si-O bonds instead of regularising the tetrahedra (Si-O spread reduced
only 3x). The prior a denoiser of silica needs is the set of networks of regular corner-sharing tetrahedra with
any tilt: what is stiff (Si-O lengths, O-Si-O angles) is noise when it deviates, what is soft (tilts) is not.

How: each network starts from an ideal polymorph (``trajden.lattices``, Si-O = 1), its cell scaled so that
Si-Si / Si-O becomes a random target in [1.80, 2.00] (Si-O-Si of about 128-180 deg on average), strained by
up to 2 % per component, and its atoms displaced at random (0.10-0.35 bonds per coordinate). The positions
are then relaxed at fixed cell (L-BFGS) under a geometric energy, not any interatomic potential:

    E = sum_SiO (r - 1)^2 + sum_tetrahedron-edges (r - sqrt(8/3))^2
        + sum_Si-Si (1.75 - r)_+^2 + sum_other-O-O (1.45 - r)_+^2

so the tetrahedra become regular again while the tilts the random start chose remain (the topology, each
Si's four O, is the ideal polymorph's). A network is kept only if its tetrahedra are regular (Si-O spread
< 0.01, O-Si-O spread < 1.5 deg) and every Si keeps four O within 1.2 bonds. Stored in the format of
``defect_library.py`` (positions and cells in Si-O units, ``types`` Si = 0, O = 1, ``defect`` all false).
No MD potential enters: the study's Munetoh-Tersoff snapshots and twins stay unseen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trajden.lattices import make_crystal  # noqa: E402

POLYMORPHS = ("beta-cristobalite", "alpha-cristobalite", "alpha-quartz", "beta-quartz")
EDGE = np.sqrt(8.0 / 3.0)  # O-O edge of a regular tetrahedron with Si-O = 1
SISI_MIN, OO_MIN = 1.75, 1.45


def _mic(d: np.ndarray, cell: np.ndarray, inv: np.ndarray) -> np.ndarray:
    f = d @ inv
    return (f - np.round(f)) @ cell


def topology(pos: np.ndarray, cell: np.ndarray, types: np.ndarray):
    """Si-O bonds (each Si's four nearest O) and the O-O edges of each tetrahedron, as index pairs."""
    inv = np.linalg.inv(cell)
    si, o = np.where(types == 0)[0], np.where(types == 1)[0]
    d = _mic(pos[o][None, :, :] - pos[si][:, None, :], cell, inv)
    nearest = np.argsort(np.linalg.norm(d, axis=-1), axis=1)[:, :4]
    bonds = np.array([(s, o[j]) for s, row in zip(si, nearest) for j in row])
    edges = np.array([(o[row[a]], o[row[b]]) for row in nearest for a in range(4) for b in range(a + 1, 4)])
    return bonds, edges


def _energy(x, cell, inv, bonds, edges, si_pairs, oo_pairs):
    pos = x.reshape(-1, 3)
    e, grad = 0.0, np.zeros_like(pos)
    for pairs, target, kind in ((bonds, 1.0, "eq"), (edges, EDGE, "eq"), (si_pairs, SISI_MIN, "rep"),
                                (oo_pairs, OO_MIN, "rep")):
        if len(pairs) == 0:
            continue
        d = _mic(pos[pairs[:, 0]] - pos[pairs[:, 1]], cell, inv)
        r = np.linalg.norm(d, axis=1)
        dev = r - target
        if kind == "rep":
            dev = np.minimum(dev, 0.0)
        e += float(np.sum(dev**2))
        g = (2.0 * dev / np.maximum(r, 1e-12))[:, None] * d
        np.add.at(grad, pairs[:, 0], g)
        np.add.at(grad, pairs[:, 1], -g)
    return e, grad.ravel()


def _nonbonded(pos, cell, types, bonds, edges):
    """Si-Si pairs and O-O pairs outside a common tetrahedron within reach of the repulsions."""
    inv = np.linalg.inv(cell)
    # all pairs (a few hundred atoms per cell), minimum image
    d = _mic(pos[None, :, :] - pos[:, None, :], cell, inv)
    r = np.linalg.norm(d, axis=-1)
    i, j = np.where(np.triu(r < 2.2, 1))
    tet = {tuple(sorted(e)) for e in edges.tolist()}
    si_pairs = np.array([(a, b) for a, b in zip(i, j) if types[a] == 0 and types[b] == 0]).reshape(-1, 2)
    oo = [(a, b) for a, b in zip(i, j) if types[a] == 1 and types[b] == 1 and (a, b) not in tet]
    return si_pairs, np.array(oo).reshape(-1, 2)


def _o_to_si(bonds: np.ndarray, vectors: np.ndarray) -> list:
    """The two O -> Si bond vectors of each O (``vectors[i]``: Si minus O of ``bonds[i]``)."""
    by_o: dict[int, list] = {}
    for o, vec in zip(bonds[:, 1], vectors):
        by_o.setdefault(int(o), []).append(vec)
    return [vs for vs in by_o.values() if len(vs) == 2]


def geometry(pos, cell, bonds, edges):
    """(Si-O std, O-Si-O std, Si-O-Si mean, Si-O-Si std; angles in degrees) of a network with this topology."""
    inv = np.linalg.inv(cell)
    v = _mic(pos[bonds[:, 1]] - pos[bonds[:, 0]], cell, inv).reshape(-1, 4, 3)
    r = np.linalg.norm(v, axis=-1)
    u = v / r[..., None]
    ang = [np.degrees(np.arccos(np.clip(np.sum(u[:, a] * u[:, b], -1), -1, 1)))
           for a in range(4) for b in range(a + 1, 4)]
    sos = [np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))
           for a, b in _o_to_si(bonds, _mic(pos[bonds[:, 0]] - pos[bonds[:, 1]], cell, inv))]
    return float(r.std()), float(np.std(np.concatenate(ang))), float(np.mean(sos)), float(np.std(sos))


def make_network(polymorph: str, rng: np.random.Generator, n_atoms: int = 256):
    """One relaxed tilted network: ``(positions, cell, types, info)``; the first three None when it fails the
    checks (``info`` says why)."""
    c = make_crystal(polymorph, n_atoms, d_nn=1.0)
    types = c.types
    bonds, edges = topology(c.positions, c.cell, types)
    inv0 = np.linalg.inv(c.cell)
    si = np.where(types == 0)[0]
    # Si-Si / Si-O of the ideal structure (each O's two Si)
    d = _mic(c.positions[bonds[:, 0]] - c.positions[bonds[:, 1]], c.cell, inv0)
    ratio0 = float(np.mean([np.linalg.norm(a - b) for a, b in _o_to_si(bonds, d)]))
    target = rng.uniform(1.80, 2.00)
    scale = target / ratio0
    e = rng.uniform(-0.02, 0.02, size=(3, 3))
    deform = scale * (np.eye(3) + 0.5 * (e + e.T))
    cell = c.cell @ deform.T
    pos = c.positions @ deform.T + rng.uniform(0.10, 0.35) * rng.standard_normal(c.positions.shape)
    inv = np.linalg.inv(cell)
    for _ in range(2):  # the repulsion lists are taken from the positions: relax again with the relaxed ones'
        si_pairs, oo_pairs = _nonbonded(pos, cell, types, bonds, edges)
        res = minimize(_energy, pos.ravel(), args=(cell, inv, bonds, edges, si_pairs, oo_pairs), jac=True,
                       method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-8})
        pos = res.x.reshape(-1, 3)
    sio_std, osio_std, sosi, sosi_std = geometry(pos, cell, bonds, edges)
    # every Si keeps exactly its four O within 1.2 bonds
    dist = np.linalg.norm(_mic(pos[None, :, :] - pos[si][:, None, :], cell, inv), axis=-1)
    four = np.sum((dist < 1.2) & (types[None, :] == 1), axis=1)
    info = dict(polymorph=polymorph, target=target, sio_std=sio_std, osio_std=osio_std, sosi=sosi,
                sosi_std=sosi_std, energy=float(res.fun), four_o=float(np.mean(four == 4)))
    ok = sio_std < 0.01 and osio_std < 1.5 and np.all(four == 4)
    return (pos, cell, types, info) if ok else (None, None, None, info)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("silica_networks.npz")))
    ap.add_argument("--per-polymorph", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    names, positions, cells, types, rows = [], [], [], [], []
    t0 = time.time()
    for poly in POLYMORPHS:
        kept = tries = 0
        while kept < a.per_polymorph and tries < 4 * a.per_polymorph:
            tries += 1
            pos, cell, typ, info = make_network(poly, rng)
            rows.append(info)
            if pos is None:
                continue
            names.append(f"{poly}-tilted-{kept}")
            positions.append(pos)
            cells.append(cell)
            types.append(typ)
            kept += 1
        print(f"{poly}: kept {kept} of {tries}", flush=True)
    for poly in POLYMORPHS:
        r = [x for x in rows if x["polymorph"] == poly]
        print(f"{poly}: Si-Si/Si-O target {min(x['target'] for x in r):.3f}-{max(x['target'] for x in r):.3f}, "
              f"Si-O-Si mean {np.mean([x['sosi'] for x in r]):.1f} deg (per network "
              f"{min(x['sosi'] for x in r):.1f}-{max(x['sosi'] for x in r):.1f}, spread within "
              f"{np.mean([x['sosi_std'] for x in r]):.1f}), Si-O std max {max(x['sio_std'] for x in r):.4f}, "
              f"O-Si-O std max {max(x['osio_std'] for x in r):.2f} deg")
    counts = np.array([len(p) for p in positions])
    np.savez_compressed(
        a.out, names=np.array(names), counts=counts, positions=np.concatenate(positions).astype(np.float32),
        cells=np.array(cells), defect=np.zeros(int(counts.sum()), dtype=bool),
        types=np.concatenate(types).astype(np.int8))
    print(f"wrote {a.out}: {len(names)} networks, {counts.sum()} atoms, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
