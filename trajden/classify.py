"""Structure labels through OVITO: adaptive common neighbour analysis (a-CNA) and polyhedral template matching.

Codes follow OVITO (:mod:`trajden.names`). PTM is run with fcc, hcp, bcc, simple cubic, cubic and hexagonal
diamond enabled (icosahedral off) and OVITO's default RMSD cutoff of 0.1 unless told otherwise.
``DataCollection`` objects are built directly from arrays (much faster than going through ASE), with the atoms
in Morton order of space (:func:`trajden.neighbors.spatial_order`; labels come back in the input's order): PTM
on a 10^6-atom frame whose atoms are in random order took 31 s, in lattice order 18 s.
"""

from __future__ import annotations

import numpy as np

from trajden import names

#: OVITO's own default; PTM's labels collapse on noisy (raw) input with it, which is what users see
DEFAULT_PTM_RMSD_CUTOFF = 0.1


def _data_collection(positions: np.ndarray, cell: np.ndarray, origin: np.ndarray | None = None, pbc=None):
    from ovito.data import DataCollection, Particles, SimulationCell

    data = DataCollection()
    matrix = np.zeros((3, 4))
    matrix[:, :3] = np.asarray(cell, dtype=np.float64).T  # OVITO: cell vectors as columns
    if origin is not None:
        matrix[:, 3] = origin
    sim_cell = SimulationCell(pbc=(True, True, True) if pbc is None else tuple(bool(p) for p in pbc))
    sim_cell[...] = matrix
    data.objects.append(sim_cell)
    particles = Particles(count=len(positions))
    particles.create_property("Position", data=np.ascontiguousarray(positions, dtype=np.float64))
    data.objects.append(particles)
    return data


def _labels(positions: np.ndarray, cell: np.ndarray, origin: np.ndarray | None, modifier, pbc=None,
            types: np.ndarray | None = None, outputs=("Structure Type",)):
    """``modifier``'s per-atom ``outputs`` as (N,) int8 in the input's order (one array, or a tuple for several),
    computed on the atoms in spatial order; ``types`` (N,) positive ints become OVITO's "Particle Type"."""
    from trajden.neighbors import spatial_order

    positions = np.asarray(positions, dtype=np.float64)
    order = spatial_order(positions, cell)  # periodic bins: the origin only shifts the curve
    data = _data_collection(positions[order], cell, origin, pbc)
    if types is not None:
        data.particles_.create_property("Particle Type", data=np.asarray(types, dtype=np.int32)[order])
    data.apply(modifier)
    out = []
    for name in outputs:
        labels = np.empty(len(positions), dtype=np.int8)
        labels[order] = np.asarray(data.particles[name][...], dtype=np.int8)
        out.append(labels)
    return out[0] if len(out) == 1 else tuple(out)


def acna(positions: np.ndarray, cell: np.ndarray, origin: np.ndarray | None = None, pbc=None) -> np.ndarray:
    """Adaptive CNA labels (N,) int8: 0 other, 1 fcc, 2 hcp, 3 bcc, 4 ico (``pbc``: periodic directions)."""
    from ovito.modifiers import CommonNeighborAnalysisModifier

    return _labels(positions, cell, origin,
                   CommonNeighborAnalysisModifier(mode=CommonNeighborAnalysisModifier.Mode.AdaptiveCutoff), pbc)


def _ptm_modifier(rmsd_cutoff: float, ordering: bool = False):
    from ovito.modifiers import PolyhedralTemplateMatchingModifier as PTM

    mod = PTM(rmsd_cutoff=rmsd_cutoff, output_ordering=ordering)
    enabled = {PTM.Type.FCC, PTM.Type.HCP, PTM.Type.BCC, PTM.Type.SC, PTM.Type.CUBIC_DIAMOND, PTM.Type.HEX_DIAMOND}
    for s in mod.structures:
        if s.id != PTM.Type.OTHER:
            s.enabled = s.id in enabled
    return mod


def ptm(
    positions: np.ndarray,
    cell: np.ndarray,
    origin: np.ndarray | None = None,
    rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF,
    pbc=None,
) -> np.ndarray:
    """PTM labels (N,) int8 with fcc, hcp, bcc, sc, cubic and hexagonal diamond enabled (``pbc``: see acna)."""
    return _labels(positions, cell, origin, _ptm_modifier(rmsd_cutoff), pbc)


def ptm_ordering(
    positions: np.ndarray,
    cell: np.ndarray,
    types: np.ndarray,
    origin: np.ndarray | None = None,
    rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF,
    pbc=None,
) -> tuple[np.ndarray, np.ndarray]:
    """PTM labels and chemical ordering (:data:`trajden.names.ORDERING_NAMES`), each (N,) int8.

    ``types`` (N,) tells the elements apart (any integers; equal for atoms of one element). The ordering is
    PTM's own (OVITO ``output_ordering``): pure, L1_0, L1_2 (A and B sites), B2, zincblende/wurtzite, boron
    nitride, or none (e.g. rocksalt, whose all-atom template is simple cubic).
    """
    kinds = np.unique(np.asarray(types), return_inverse=True)[1] + 1
    return _labels(positions, cell, origin, _ptm_modifier(rmsd_cutoff, ordering=True), pbc, types=kinds,
                   outputs=("Structure Type", "Ordering Type"))


def sublattice_ptm(
    positions: np.ndarray,
    cell: np.ndarray,
    mask: np.ndarray,
    origin: np.ndarray | None = None,
    rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF,
    pbc=None,
) -> np.ndarray:
    """PTM labels (N,) int8 of the atoms selected by ``mask`` computed on those atoms alone (the others -1).

    The Si atoms of cristobalite form a cubic-diamond sublattice, those of quartz none of PTM's templates: this
    is how silica polymorphs are told apart. Atoms outside ``mask`` get -1 (not labelled).
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.full(len(mask), -1, dtype=np.int8)
    if mask.any():
        out[mask] = ptm(np.asarray(positions)[mask], cell, origin, rmsd_cutoff, pbc)
    return out


def classify(
    positions: np.ndarray,
    cell: np.ndarray,
    classifiers=(names.ACNA, names.PTM),
    origin: np.ndarray | None = None,
    ptm_rmsd_cutoff: float = DEFAULT_PTM_RMSD_CUTOFF,
    pbc=None,
    types: np.ndarray | None = None,
    sublattice: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Labels of every requested classifier: ``{"acna": (N,) int8, "ptm": (N,) int8}``.

    ``pbc``: periodic along each cell vector (None: all); OVITO makes no images across the others.
    With PTM requested, ``types`` (N,) of two or more distinct values adds PTM's chemical ordering under
    ``names.VAR_ORDERING`` (from the same PTM run), and a boolean ``sublattice`` mask adds the PTM labels of
    those atoms alone under ``names.VAR_SUBLATTICE`` (:func:`sublattice_ptm`).
    """
    out = {}
    for c in classifiers:
        if c == names.ACNA:
            out[c] = acna(positions, cell, origin, pbc)
        elif c == names.PTM:
            if types is not None and len(np.unique(types)) > 1:
                out[c], out[names.VAR_ORDERING] = ptm_ordering(positions, cell, types, origin, ptm_rmsd_cutoff, pbc)
            else:
                out[c] = ptm(positions, cell, origin, ptm_rmsd_cutoff, pbc)
            if sublattice is not None:
                out[names.VAR_SUBLATTICE] = sublattice_ptm(positions, cell, sublattice, origin, ptm_rmsd_cutoff,
                                                           pbc)
        else:
            raise ValueError(f"unknown classifier {c!r}; expected one of {names.CLASSIFIERS}")
    return out


def fractions(labels: np.ndarray, codes=names.PTM_CODES) -> dict[str, float]:
    """Fraction of atoms per structure name for the given codes."""
    labels = np.asarray(labels)
    n = max(len(labels), 1)
    return {names.STRUCTURE_NAMES[c]: float(np.count_nonzero(labels == c)) / n for c in codes}
