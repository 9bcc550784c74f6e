"""Atomistic structures for the validation studies, built with numpy (orthogonal periodic boxes).

* :func:`cubic_crystal`: fcc / bcc in a cubic box of n x n x n conventional cells;
* :func:`vacancy`, :func:`divacancy`, :func:`split_interstitial`, :func:`frenkel_pair`: point defects in such a
  crystal;
* :func:`prismatic_loop_bcc`: a 1/2<111> vacancy loop in bcc (a disc of three (222) planes removed);
* :func:`loop_seeded_bcc`: bcc with four such loops (seeds of a dislocation network);
* :func:`sigma5_bicrystal`: a periodic fcc or bcc bicrystal with two symmetric Sigma5 (310)[001] tilt boundaries.

All return a :class:`pipelines.md.study_common.Snapshot` (ids 1..N, type 1) plus a dict describing the defect.
"""

from __future__ import annotations

import numpy as np

from pipelines.md.study_common import Snapshot

BASIS = {
    "fcc": np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
    "bcc": np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
}


def _snapshot(pos: np.ndarray, lengths) -> Snapshot:
    n = len(pos)
    return Snapshot(np.asarray(pos, dtype=np.float64), np.diag(np.asarray(lengths, dtype=np.float64)), np.zeros(3),
                    np.arange(1, n + 1, dtype=np.int64), np.ones(n, dtype=np.int32))


def cubic_crystal(kind: str, a: float, n: int) -> Snapshot:
    """fcc or bcc, ``n`` conventional cells along each axis."""
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 1, 3)
    pos = ((g + BASIS[kind][None]) * a).reshape(-1, 3)
    return _snapshot(pos, [n * a] * 3)


def _closest(snap: Snapshot, point) -> int:
    d = snap.positions - np.asarray(point)
    d -= np.rint(d / np.diag(snap.cell)) * np.diag(snap.cell)
    return int(np.argmin((d * d).sum(-1)))


def _renumber(pos: np.ndarray, cell: np.ndarray) -> Snapshot:
    return _snapshot(pos, np.diag(cell))


def vacancy(a: float, n: int, kind: str = "fcc") -> tuple[Snapshot, dict]:
    """One vacancy at the lattice site nearest to the box centre."""
    s = cubic_crystal(kind, a, n)
    c = np.diag(s.cell) / 2
    i = _closest(s, c)
    site = s.positions[i].copy()
    pos = np.delete(s.positions, i, axis=0)
    return _renumber(pos, s.cell), {"defect": "vacancy", "site_A": site.round(3).tolist(), "removed": 1}


def nn_distance(kind: str, a: float) -> float:
    """Nearest-neighbour distance of an fcc or bcc lattice with cubic lattice constant ``a``."""
    return a / np.sqrt(2.0) if kind == "fcc" else a * np.sqrt(3.0) / 2


#: split-interstitial (dumbbell) axis per lattice: fcc <100> (along z), bcc <110>
DUMBBELL_AXIS = {"fcc": np.array([0.0, 0.0, 1.0]), "bcc": np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0)}
DUMBBELL_NAME = {"fcc": "<100>", "bcc": "<110>"}


def _with_dumbbell(s: Snapshot, kind: str, a: float, remove: list[int], site_index: int) -> np.ndarray:
    """``s``'s positions without the atoms ``remove`` (``site_index`` among them), plus a dumbbell of two atoms
    +-0.3 a along :data:`DUMBBELL_AXIS` around the site ``site_index``."""
    site = s.positions[site_index]
    d = 0.3 * a * DUMBBELL_AXIS[kind]
    return np.concatenate([np.delete(s.positions, remove, axis=0), [site - d, site + d]])


def split_interstitial(a: float, n: int, kind: str = "fcc") -> tuple[Snapshot, dict]:
    """One split interstitial (fcc: <100> dumbbell along z; bcc: <110>) at the lattice site nearest to the
    centre."""
    s = cubic_crystal(kind, a, n)
    i = _closest(s, np.diag(s.cell) / 2)
    site = s.positions[i].copy()
    pos = _with_dumbbell(s, kind, a, [i], i)
    return _renumber(pos, s.cell), {"defect": f"{DUMBBELL_NAME[kind]} split interstitial",
                                    "site_A": site.round(3).tolist(), "added": 1}


def frenkel_pair(a: float, n: int, kind: str = "bcc") -> tuple[Snapshot, dict]:
    """A vacancy at the site nearest to a quarter of the box diagonal and a split interstitial
    (:func:`split_interstitial`'s dumbbell) at the site nearest to three quarters (half a box diagonal apart)."""
    s = cubic_crystal(kind, a, n)
    L = np.diag(s.cell)
    iv = _closest(s, 0.25 * L)
    ii = _closest(s, 0.75 * L)
    pos = _with_dumbbell(s, kind, a, [iv, ii], ii)
    return _renumber(pos, s.cell), {"defect": f"Frenkel pair (vacancy + {DUMBBELL_NAME[kind]} dumbbell)",
                                    "vacancy_A": s.positions[iv].round(3).tolist(),
                                    "dumbbell_A": s.positions[ii].round(3).tolist()}


def divacancy(a: float, n: int, kind: str = "fcc") -> tuple[Snapshot, dict]:
    """Two vacancies on nearest-neighbour sites, at the site nearest to the centre and a neighbour of it."""
    s = cubic_crystal(kind, a, n)
    i = _closest(s, np.diag(s.cell) / 2)
    r = ((s.positions - s.positions[i]) ** 2).sum(-1)
    r[i] = np.inf
    j = int(np.argmin(r))
    return _renumber(np.delete(s.positions, [i, j], axis=0), s.cell), {
        "defect": "nearest-neighbour divacancy", "sites_A": s.positions[[i, j]].round(3).tolist(), "removed": 2}


def _cut_loop(pos: np.ndarray, L: np.ndarray, a: float, centre, normal, radius: float) -> tuple[np.ndarray, int]:
    """Remove a disc of three (222) planes normal to ``normal`` (a <111>) around ``centre`` and close the gap."""
    nrm = np.asarray(normal, float) / np.linalg.norm(normal)
    d = pos - np.asarray(centre)
    d -= np.rint(d / L) * L
    h = d @ nrm
    lateral = np.linalg.norm(d - h[:, None] * nrm, axis=1)
    b = a * np.sqrt(3.0) / 2
    cut = (np.abs(h) < b / 2) & (lateral < radius)  # planes at -h0, 0, +h0 (h0 = b/3); boundaries half-way
    # close the gap: atoms above/below the disc move towards it by b/2 (decaying over `reach` along <111> and
    # over one |b| outside the radius); left open, the disc relaxes to a flat void instead of a loop
    reach = 4 * b
    w = np.clip(1 - np.abs(h) / reach, 0, 1) * np.clip((radius + b - lateral) / b, 0, 1)
    out = pos - (np.sign(h) * w * b / 2)[:, None] * nrm
    return np.mod(out[~cut], L), int(cut.sum())


def prismatic_loop_bcc(a: float, n: int, radius: float) -> tuple[Snapshot, dict]:
    """bcc with a 1/2[111] prismatic vacancy loop: the atoms of three consecutive (222) planes within
    ``radius`` of the [111] axis through the lattice site nearest to the centre are removed (|b| = a sqrt(3)/2)
    and the crystal above and below is moved in to close the gap (relax afterwards)."""
    s = cubic_crystal("bcc", a, n)
    c = s.positions[_closest(s, np.diag(s.cell) / 2)]
    pos, removed = _cut_loop(s.positions, np.diag(s.cell), a, c, (1, 1, 1), radius)
    return _renumber(pos, s.cell), {"defect": "1/2[111] prismatic vacancy loop", "radius_A": radius,
                                    "removed": removed, "centre_A": c.round(3).tolist(),
                                    "burgers_A": round(float(a * np.sqrt(3.0) / 2), 4)}


#: the four 1/2<111> loop normals and their centres (fractions of the box) for :func:`loop_seeded_bcc`
LOOP_SEEDS = (((1, 1, 1), (0.25, 0.25, 0.25)), ((-1, 1, 1), (0.75, 0.75, 0.25)),
              ((1, -1, 1), (0.75, 0.25, 0.75)), ((1, 1, -1), (0.25, 0.75, 0.75)))


def loop_seeded_bcc(a: float, n: int, radius: float) -> tuple[Snapshot, dict]:
    """bcc seeded with four prismatic vacancy loops, one per <111> (the paper's recipe for a dislocation network:
    seed loops, then compress; the compression is MD, see ``pipelines/study_defects.py``)."""
    s = cubic_crystal("bcc", a, n)
    L = np.diag(s.cell)
    pos, removed = s.positions, 0
    for normal, frac in LOOP_SEEDS:
        c = s.positions[_closest(s, np.asarray(frac) * L)]
        pos, r = _cut_loop(pos, L, a, c, normal, radius)
        removed += r
    return _renumber(pos, s.cell), {"defect": "dislocation network from four 1/2<111> loops, compressed along [001]",
                                    "loop_radius_A": radius, "removed": removed}


def _rotated(kind: str, a: float, xdir, ydir, lengths, xlo: float, xhi: float) -> np.ndarray:
    """``kind`` (fcc, bcc) lattice points with crystal directions ``xdir``, ``ydir`` along lab x, y, inside the slab
    ``xlo <= x < xhi``, ``0 <= y < Ly``, ``0 <= z < Lz`` (lab frame)."""
    ex = np.asarray(xdir, float) / np.linalg.norm(xdir)
    ey = np.asarray(ydir, float) / np.linalg.norm(ydir)
    ez = np.cross(ex, ey)
    rot = np.stack([ex, ey, ez])  # lab = rot @ crystal
    reach = int(np.ceil(np.linalg.norm(lengths) / a)) + 2
    r = np.arange(-reach, reach + 1)
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 1, 3)
    crys = ((g + BASIS[kind][None]) * a).reshape(-1, 3)
    lab = crys @ rot.T
    eps = 1e-6
    Ly, Lz = lengths[1], lengths[2]
    keep = ((lab[:, 0] >= xlo - eps) & (lab[:, 0] < xhi - eps) & (lab[:, 1] >= -eps) & (lab[:, 1] < Ly - eps)
            & (lab[:, 2] >= -eps) & (lab[:, 2] < Lz - eps))
    return lab[keep]


def sigma5_bicrystal(a: float, nx: int, ny: int, nz: int, overlap: float = 0.7,
                     kind: str = "fcc") -> tuple[Snapshot, dict]:
    """Periodic ``kind`` (fcc, bcc) bicrystal, two symmetric Sigma5 (310)[001] tilt boundaries (36.87 deg about
    [001]) at x = 0 and x = Lx/2: :func:`tilt_bicrystal` with (h, k) = (3, 1)."""
    return tilt_bicrystal(a, 3, 1, nx, ny, nz, overlap, kind)


def tilt_bicrystal(a: float, h: int, k: int, nx: int, ny: int, nz: int, overlap: float = 0.7,
                   kind: str = "fcc") -> tuple[Snapshot, dict]:
    """Periodic ``kind`` (fcc, bcc) bicrystal, two symmetric (h k 0)[001] tilt boundaries at x = 0 and x = Lx/2
    (misorientation 2 atan(k / h) about [001]; (3, 1): Sigma5 (310), (5, 1): Sigma13 (510)).
    Grain A: x = [h k 0], y = [-k h 0], z = [001]; grain B (its mirror image): x = [h -k 0], y = [k h 0].
    ``nx`` periods sqrt(h^2 + k^2) a per grain along x, ``ny`` such periods along y, ``nz`` cells a along z.
    Of two atoms closer than ``overlap`` nearest-neighbour distances across a boundary, one is removed."""
    from scipy.spatial import cKDTree

    p = np.sqrt(float(h * h + k * k)) * a
    L = np.array([2 * nx * p, ny * p, nz * a])
    ga = _rotated(kind, a, [h, k, 0], [-k, h, 0], L, 0.0, L[0] / 2)
    gb = _rotated(kind, a, [h, -k, 0], [k, h, 0], L, L[0] / 2, L[0])
    pos = np.concatenate([ga, gb])
    pos = np.mod(pos, L)
    pos = np.where(pos >= L, pos - L, pos)  # mod can round up to L
    tree = cKDTree(pos, boxsize=L)
    pairs = tree.query_pairs(overlap * nn_distance(kind, a), output_type="ndarray")
    drop = np.unique(np.maximum(pairs[:, 0], pairs[:, 1])) if len(pairs) else np.zeros(0, int)
    pos = np.delete(pos, drop, axis=0)
    sigma = (h * h + k * k) // (2 if (h * h + k * k) % 2 == 0 else 1)
    return _snapshot(pos, L), {"defect": f"Sigma{sigma} ({h}{k}0)[001] symmetric tilt GBs (2, periodic)",
                               "boundaries_x_A": [0.0, round(float(L[0]) / 2, 3)], "removed_overlap": int(len(drop)),
                               "box_A": L.round(3).tolist()}
