"""Accuracy of labels before and after denoising on trajectories with a known answer (real MD fixtures).

Used by ``pipelines/validate_md.py`` (the report) and by the tests (the bars), so both measure the same way.
Accuracy follows the DC3 convention: the fraction of atoms labelled with the structure the crystal was
prepared in ("other" counts as wrong); for a liquid, the fraction labelled "other".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from trajden import names
from trajden.classify import acna, ptm
from trajden.denoise import denoise
from trajden.io.readers import Trajectory


@dataclass
class FrameScore:
    """Scores of one frame (fractions of atoms)."""

    fixture: str
    frame: int
    atoms: int
    target: str  # structure name, or "other" for a liquid
    acna_raw: float
    acna_denoised: float
    ptm_raw: float
    ptm_denoised: float
    scale: float
    iterations: int
    status: str
    mean_displacement: float

    def row(self) -> dict:
        return asdict(self)


def score_frames(path, model, target_code: int, k: int = 8, tol=None, scale="auto", frames=None,
                 label: str | None = None):
    """Denoise the frames of ``path`` and score a-CNA / PTM against ``target_code`` (0: liquid -> "other").

    Returns (list of :class:`FrameScore`, list of (raw a-CNA, denoised a-CNA) label arrays per frame).
    """
    traj = Trajectory(str(path))
    frames = range(len(traj)) if frames is None else frames
    scores, labels = [], []
    for i in frames:
        f = traj.frame(i)
        res = denoise(f.positions, f.cell, f.types, model, k=k, tol=tol, scale=scale)
        la_raw, la_den = acna(f.positions, f.cell, f.origin), acna(res.positions, f.cell, f.origin)
        lp_raw, lp_den = ptm(f.positions, f.cell, f.origin), ptm(res.positions, f.cell, f.origin)
        disp = np.sqrt(((res.positions - f.positions) ** 2).sum(-1))
        scores.append(FrameScore(
            fixture=label or str(path), frame=i, atoms=len(f.positions), target=names.STRUCTURE_NAMES[target_code],
            acna_raw=float(np.mean(la_raw == target_code)), acna_denoised=float(np.mean(la_den == target_code)),
            ptm_raw=float(np.mean(lp_raw == target_code)), ptm_denoised=float(np.mean(lp_den == target_code)),
            scale=res.scale, iterations=res.iterations, status=names.FRAME_STATUS_NAMES[res.status],
            mean_displacement=float(disp.mean()),
        ))
        labels.append((la_raw, la_den))
    return scores, labels


def defect_agreement(denoised: np.ndarray, reference: np.ndarray, crystal_code: int = names.FCC) -> dict:
    """Compare non-crystalline atoms after denoising with those of the energy-minimised frame.

    Returns counts of defect atoms in each and the fraction of atoms on which the two agree.
    """
    d = denoised != crystal_code
    r = reference != crystal_code
    return {
        "defect_atoms_denoised": int(d.sum()),
        "defect_atoms_minimised": int(r.sum()),
        "both": int((d & r).sum()),
        "agreement": float(np.mean(d == r)),
    }


def defect_clusters(positions: np.ndarray, cell: np.ndarray, mask: np.ndarray, link: float) -> list[np.ndarray]:
    """Group the atoms selected by ``mask`` into spatial clusters (single linkage within ``link``, periodic).

    Returns the atom indices of each cluster, largest first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from trajden.neighbors import build_graph

    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    g = build_graph(np.asarray(positions)[idx], cell, link)
    adj = coo_matrix((np.ones(len(g.src)), (g.src.numpy(), g.dst.numpy())), shape=(len(idx), len(idx)))
    n, lab = connected_components(adj, directed=False)
    clusters = [idx[lab == c] for c in range(n)]
    return sorted(clusters, key=len, reverse=True)
