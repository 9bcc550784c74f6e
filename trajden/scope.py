"""What a model may rewrite: atoms whose environment the model does not know are left where they were.

A denoiser trained on ideal lattices plus Gaussian noise of at most ``sigma_max`` nearest-neighbour distances
(per coordinate) removes displacements of that size. Given something it was never trained on (a nanotube,
a fullerene, water, a compound given to a one-element model) it still predicts a "noise" at every atom and,
applied iteratively, rewrites the structure into one it knows: atoms move by 0.4-1.7 nearest-neighbour
distances where a thermal crystal's atoms move by ``sqrt(3) sigma``.

:class:`MoveGuard` measures that after denoising: for every atom the RMS move of the atom and its neighbours
within ``radius`` nearest-neighbour distances of the raw frame. Where it exceeds
``kappa * sqrt(3) * sigma_max`` (the RMS move of a crystal at the hottest noise the model was trained on,
times a margin) the atom is put back at its raw position and flagged. When more than ``frame_fraction`` of a
frame's atoms are flagged the whole frame is left raw. Measured with the shipped one-element model
(``pipelines/study_scope.py``): hot fcc/bcc/hcp up to ``sigma_max`` reach a local RMS move of at most
1.44 ``sqrt(3) sigma_max`` and real Cu melts 1.04; a (10,10) nanotube, C60 and liquid water at least 1.9.
``kappa = 1.65`` sits between.

:class:`SurfaceFinder` marks atoms at a free surface (a slab's faces, a particle's or droplet's outer shell, the
wall of a void) before denoising: the models were trained on bulk lattices, and the denoiser held them where
they were (measured on real Cu slabs at 0.7-0.9 Tm, ``pipelines/study_surfaces.py``: a bulk-trained model
otherwise pushes the outer layers by up to 0.8 A).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajden import names
from trajden.scale import VACUUM_EMPTY_FRACTION, occupied_volume

#: margin over the RMS move of a crystal at the model's hottest training noise (see the module docstring)
DEFAULT_KAPPA = 1.65
#: neighbourhood of the local RMS move, in nearest-neighbour distances (about 13-40 atoms in dense phases)
DEFAULT_RADIUS = 1.6
#: above this fraction of flagged atoms the whole frame is left raw
DEFAULT_FRAME_FRACTION = 0.5


@dataclass
class GuardResult:
    """Outcome of :meth:`MoveGuard.compute`.

    Attributes
    ----------
    positions : (N, 3) the denoised positions, raw where flagged
    flags : (N,) int8 :data:`trajden.names.SCOPE_DENOISED` or :data:`trajden.names.SCOPE_MOVE_BOUND`
        (:data:`trajden.names.SCOPE_FRAME` for every atom of a frame left raw as a whole)
    local_rms : (N,) local RMS move in nearest-neighbour distances (each atom's own move where no atom moved
        further than the bound: the neighbour list is then skipped)
    bound : the bound on ``local_rms``
    """

    positions: np.ndarray
    flags: np.ndarray
    local_rms: np.ndarray
    bound: float

    @property
    def n_flagged(self) -> int:
        return int(np.count_nonzero(self.flags))

    @property
    def frame_left_raw(self) -> bool:
        return bool(len(self.flags)) and bool(np.all(self.flags == names.SCOPE_FRAME))


class MoveGuard:
    """Put atoms back whose neighbourhood moved further than any thermal crystal the model knows.

    Parameters
    ----------
    kappa : margin over ``sqrt(3) sigma_max`` (the RMS move of a crystal at the model's hottest training noise)
    radius : neighbourhood of the local RMS move, in nearest-neighbour distances
    frame_fraction : above this fraction of flagged atoms the whole frame is left raw
    """

    def __init__(self, kappa: float = DEFAULT_KAPPA, radius: float = DEFAULT_RADIUS,
                 frame_fraction: float = DEFAULT_FRAME_FRACTION):
        if not kappa > 0 or not radius > 0 or not 0 < frame_fraction <= 1:
            raise ValueError(f"MoveGuard needs kappa > 0, radius > 0 and 0 < frame_fraction <= 1 "
                             f"(got {kappa}, {radius}, {frame_fraction})")
        self.kappa, self.radius, self.frame_fraction = float(kappa), float(radius), float(frame_fraction)

    def bound(self, sigma_max: float) -> float:
        """The bound on the local RMS move, in nearest-neighbour distances."""
        return self.kappa * np.sqrt(3.0) * float(sigma_max)

    def compute(self, raw: np.ndarray, denoised: np.ndarray, cell: np.ndarray, nn: float,
                sigma_max: float, pbc=None) -> GuardResult:
        """Check one denoised frame.

        Parameters
        ----------
        raw, denoised : (N, 3) positions before and after denoising (same unit as ``nn``)
        cell : (3, 3) periodic cell, lattice vectors as rows
        nn : the frame's nearest-neighbour distance (the scale the model ran at)
        sigma_max : the model's largest training noise, in nearest-neighbour distances
        pbc : periodic along each cell vector (None: all); no images across the others
        """
        raw = np.asarray(raw, dtype=np.float64)
        denoised = np.asarray(denoised, dtype=np.float64)
        n = len(raw)
        bound = self.bound(sigma_max)
        cell = np.asarray(cell, dtype=np.float64)
        periodic = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
        delta = denoised - raw
        if n and abs(np.linalg.det(cell)) > 0 and periodic.any():
            shift = np.round(delta @ np.linalg.inv(cell)) * periodic  # minimum image along periodic vectors
            delta -= shift @ cell
        move2 = (delta**2).sum(axis=1) / (nn * nn)
        flags = np.zeros(n, dtype=np.int8)
        # the local RMS can exceed the bound only where some atom's own move does: skip the neighbour list
        if n == 0 or move2.max() <= bound * bound:
            return GuardResult(denoised, flags, np.sqrt(move2), bound)
        from vesin import NeighborList

        i, j = NeighborList(cutoff=self.radius * nn, full_list=True).compute(
            raw, cell, True if periodic.all() else periodic.tolist(), "ij")
        total = np.bincount(i, weights=move2[j], minlength=n) + move2
        count = np.bincount(i, minlength=n) + 1
        local = np.sqrt(total / count)
        out = local > bound
        if np.count_nonzero(out) > self.frame_fraction * n:
            return GuardResult(raw.copy(), np.full(n, names.SCOPE_FRAME, dtype=np.int8), local, bound)
        positions = denoised.copy()
        positions[out] = raw[out]
        flags[out] = names.SCOPE_MOVE_BOUND
        return GuardResult(positions, flags, local, bound)


#: neighbourhood of :class:`SurfaceFinder`'s count, in nearest-neighbour distances (about 60 atoms in dense
#: phases: counts of bulk atoms in hot crystals and melts scatter by less than 16 %)
DEFAULT_SURFACE_RADIUS = 2.2
#: an atom with fewer neighbours than this fraction of the frame's bulk count is at a surface
DEFAULT_SURFACE_FRACTION = 0.78
#: atoms within this many nearest-neighbour distances of a surface atom are held too (the model's first shell
#: of context reaches into the vacuum there)
DEFAULT_SURFACE_DEPTH = 1.6
#: the frame's bulk count: this percentile of the atoms' counts
BULK_PERCENTILE = 90.0


class SurfaceFinder:
    """Atoms at or just below a free surface, which a model trained on bulk lattices must not move.

    Only frames that can have a surface are examined: those with a non-periodic direction, and periodic ones
    with vacuum (:func:`trajden.scale.occupied_volume` finds more than
    :data:`trajden.scale.VACUUM_EMPTY_FRACTION` of the box empty: a slab, a particle, a droplet, a large void);
    in a periodic frame that fills its box no atom is marked and nothing is computed. An atom is at a surface
    when its count of neighbours within ``radius`` nearest-neighbour distances is below ``fraction`` times the
    frame's bulk count (the :data:`BULK_PERCENTILE` percentile of all counts); atoms within ``depth``
    nearest-neighbour distances of such an atom are marked too.

    Measured on real Cu slabs ((001) and (111), 0.7 and 0.9 Tm; ``pipelines/study_surfaces.py``): outer-layer
    atoms reach at most 0.77 of the bulk count, second-layer atoms 0.73-0.98, deeper ones at least 0.88, and
    bulk atoms of hot crystals and melts at least 0.84. Without the marked atoms held, the default model moves
    the outer layers' mean positions by up to 0.8 A (the outer layer outwards, the next ones inwards); holding
    the outer layer alone still moves the next one by 0.42 A, holding the atoms within ``depth = 1.6`` of it
    leaves every denoised layer's mean within 0.05 A of the raw one.

    Parameters
    ----------
    radius : neighbourhood of the count, in nearest-neighbour distances
    fraction : an atom with fewer than ``fraction`` times the bulk count of neighbours is at a surface
    depth : atoms within ``depth`` nearest-neighbour distances of a surface atom are marked too (0: none)
    """

    def __init__(self, radius: float = DEFAULT_SURFACE_RADIUS, fraction: float = DEFAULT_SURFACE_FRACTION,
                 depth: float = DEFAULT_SURFACE_DEPTH):
        if not radius > 0 or not 0 < fraction < 1 or not depth >= 0:
            raise ValueError(f"SurfaceFinder needs radius > 0, 0 < fraction < 1 and depth >= 0 "
                             f"(got {radius}, {fraction}, {depth})")
        self.radius, self.fraction, self.depth = float(radius), float(fraction), float(depth)

    def compute(self, positions: np.ndarray, cell: np.ndarray, nn: float, pbc=None, *,
                empty_fraction: float | None = None) -> np.ndarray:
        """(N,) bool: atoms at or within ``depth`` of a free surface.

        Parameters
        ----------
        positions : (N, 3) positions (same unit as ``nn``)
        cell : (3, 3) cell, lattice vectors as rows
        nn : the frame's nearest-neighbour distance
        pbc : periodic along each cell vector (None: all); no images across the others
        empty_fraction : the empty fraction of the box for these positions
            (:func:`trajden.scale.occupied_volume`'s second value, where the caller has it already); None:
            computed here where needed (periodic frames)
        """
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        n = len(positions)
        out = np.zeros(n, dtype=bool)
        periodic = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
        if n == 0 or (periodic.all() and _fills_box(positions, cell, periodic, empty_fraction)):
            return out
        from vesin import NeighborList

        images = True if periodic.all() else periodic.tolist()
        reach = max(self.radius, self.depth) * float(nn)
        i, j, d = NeighborList(cutoff=reach, full_list=True).compute(positions, cell, images, "ijd")
        count = np.bincount(i[d < self.radius * float(nn)], minlength=n)
        out = count < self.fraction * np.percentile(count, BULK_PERCENTILE)
        if self.depth > 0 and out.any():
            near = (d < self.depth * float(nn)) & out[j]
            out[i[near]] = True
        return out


def _fills_box(positions: np.ndarray, cell: np.ndarray, periodic: np.ndarray, empty_fraction: float | None) -> bool:
    """Whether the atoms fill their box (no vacuum, so no free surface); ``empty_fraction`` None: computed."""
    if empty_fraction is None:
        empty_fraction = occupied_volume(positions, cell, periodic)[1]
    return empty_fraction <= VACUUM_EMPTY_FRACTION
