"""trajden for ASE users: denoise (and label) one :class:`ase.Atoms` frame.

::

    from ase.io import read
    from trajden.ase import denoise

    atoms = read("trajden/data/cu_solidification.dump", index=-1, format="lammps-dump-text")
    clean = denoise(atoms, model="fcc-bcc-hcp-lite", iterations=4)
    clean.positions                       # denoised
    clean.arrays["structure_ptm"]         # OVITO's codes (trajden.names), also "structure_acna"
    clean.info["trajden_status"]          # "ok", "not_converged" or "diverged"

The frame goes through the same functions as ``trajden process`` (:func:`trajden.denoise.denoise`,
:func:`trajden.classify.classify`); the model is loaded once per process (:func:`trajden.cluster.get_model`).
To process a whole ASE-readable trajectory into a store, use ``trajden process run.traj`` (``--format ase``).
"""

from __future__ import annotations

import numpy as np

from trajden import names
from trajden.classify import DEFAULT_PTM_RMSD_CUTOFF, classify
from trajden.denoise import DEFAULT_ITERATIONS

__all__ = ["denoise"]

#: prefix of the frame flags in ``Atoms.info``
INFO_PREFIX = "trajden_"


def denoise(atoms, model: str = "auto", iterations: int = DEFAULT_ITERATIONS, tol: float | None = None,
            scale: float | str = "auto", classifiers=(names.ACNA, names.PTM), raw_labels: bool = False,
            ptm_rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF, device: str = "auto"):
    """A denoised copy of ``atoms`` with structure labels as per-atom arrays.

    Parameters
    ----------
    atoms : ase.Atoms, periodic in all three directions (lengths in angstrom)
    model, iterations, tol, scale, ptm_rmsd_cutoff, device : as ``trajden process`` (``--model``,
        ``--iterations``, ``--tol``, ``--scale``, ``--ptm-rmsd-cutoff``, ``--device``); ``model="auto"`` chooses
        by the atoms' chemical symbols (:func:`trajden.model.coverage.choose_model`)
    classifiers : labels computed on the denoised positions (``("acna", "ptm")``, a subset, or ``()``)
    raw_labels : also label the input positions (arrays ``structure_<classifier>_raw``)

    Returns
    -------
    ase.Atoms
        A copy with the denoised positions; arrays ``structure_<classifier>`` (int8, OVITO's codes),
        ``positions_raw`` (the input positions) and ``displacement`` (|denoised - raw|); ``info`` entries
        ``trajden_iterations``, ``trajden_residual``, ``trajden_scale``, ``trajden_status``, ``trajden_model``.
    """
    from trajden.model.coverage import denoise_elements

    if not np.all(atoms.pbc) or atoms.cell.rank != 3:
        raise ValueError(f"trajden needs a periodic 3-D cell (pbc={tuple(bool(p) for p in atoms.pbc)}, "
                         f"cell rank {atoms.cell.rank})")
    for c in classifiers:
        names.structure_var(c)
    raw = np.asarray(atoms.positions, dtype=np.float64)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    elements = np.array(atoms.get_chemical_symbols())
    result, model_name, _ = denoise_elements(raw, cell, None if len(set(elements)) < 2 else elements, model,
                                             device, k=int(iterations), tol=tol, scale=scale)
    out = atoms.copy()
    out.positions = result.positions
    out.arrays[names.VAR_POSITIONS_RAW] = raw.copy()
    out.arrays[names.VAR_DISPLACEMENT] = np.sqrt(((result.positions - raw) ** 2).sum(-1))
    if result.scope is not None:
        out.arrays[names.VAR_SCOPE] = result.scope
    for c, lab in classify(result.positions, cell, classifiers, ptm_rmsd_cutoff=ptm_rmsd_cutoff).items():
        out.arrays[names.structure_var(c)] = lab
    if raw_labels:
        for c, lab in classify(raw, cell, classifiers, ptm_rmsd_cutoff=ptm_rmsd_cutoff).items():
            out.arrays[names.structure_var(c, raw=True)] = lab
    out.info.update({
        INFO_PREFIX + names.VAR_ITERATIONS: int(result.iterations),
        INFO_PREFIX + names.VAR_RESIDUAL: float(result.residual),
        INFO_PREFIX + names.VAR_SCALE: float(result.scale),
        INFO_PREFIX + names.VAR_STATUS: names.FRAME_STATUS_NAMES[int(result.status)],
        INFO_PREFIX + "model": model_name,
    })
    return out
