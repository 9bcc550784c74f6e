"""Nearest-neighbour distance of a frame, estimated robustly, and rescaling to a model's unit.

The estimate is the position of the first peak of the pair-distribution function g(r): it does not depend
on which structure is present (fcc, bcc, hcp, diamond, liquid or a mixture), unlike a density-based guess.
Pair distances within ``1.45 rho^(-1/3)`` (``rho``: the density of the volume the atoms fill,
:func:`occupied_volume`, so that vacuum beside a slab or around a particle does not widen the window) are
histogrammed and divided by r (a Gaussian-blurred shell at
distance d then peaks at d), smoothed; the first local maximum reaching a fifth of the highest one is refined by
a Gaussian fit to its inner flank (free of the next shell).
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList

from trajden.errors import InputError

_SCALE_HINT = "pass the nearest-neighbour distance with --scale"

#: grid bins of :func:`occupied_volume` hold this many atoms on average at the density being tested (a dense
#: phase leaves a bin empty with probability about exp(-16) = 1e-7)
OCCUPANCY_ATOMS_PER_BIN = 16
#: a frame whose grid has at most this fraction of empty bins fills its cell: its volume is the cell's, exactly
VACUUM_EMPTY_FRACTION = 0.02

#: the first peak of g(r) must reach this (ideal gas: 1; real Cu melt about 2.3 on these bins, fcc/bcc/hcp at the
#: models' hottest training noise 1.5-1.6 (pipelines/study_scope.py); crystals in MD far more): below it the
#: frame has no condensed structure (a dilute gas) and no length scale is estimated
MIN_PEAK_HEIGHT = 1.25


def _box_extent(positions: np.ndarray, cell: np.ndarray, periodic: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """The box: fractional coordinates in [0, 1] per box vector, the box vectors' lengths, and its volume.

    The box is the cell, cut along each non-periodic vector to the atoms' extent (at least ``1 / N`` of it).
    """
    volume = abs(float(np.linalg.det(cell)))
    lengths = np.linalg.norm(cell, axis=1)
    if not (np.isfinite(volume) and volume > 0):
        return np.zeros_like(positions), lengths, volume
    frac = np.linalg.solve(cell.T, positions.T).T
    for ax in range(3):
        if periodic[ax]:
            frac[:, ax] = np.mod(frac[:, ax], 1.0)
        else:
            lo, span = float(frac[:, ax].min()), float(np.ptp(frac[:, ax]))
            span = max(span, 1.0 / max(len(positions), 1))
            frac[:, ax] = (frac[:, ax] - lo) / span
            volume *= span
            lengths[ax] *= span
    return frac, lengths, volume


def occupied_volume(positions: np.ndarray, cell: np.ndarray, pbc=None) -> tuple[float, float]:
    """Volume the atoms fill, and the fraction of the box that is empty.

    The box is the cell, cut to the atoms' extent along non-periodic vectors. It is divided into grid bins that
    would hold :data:`OCCUPANCY_ATOMS_PER_BIN` atoms at the box's density; where more than
    :data:`VACUUM_EMPTY_FRACTION` of them are empty (vacuum beside a slab, around a particle or a droplet, a
    void), the volume is that of the occupied bins, counted again on bins sized by the density found. Otherwise
    it is the box's volume exactly: frames that fill their cell (bulk crystals, melts) are not affected.

    Parameters
    ----------
    positions : (N, 3) Cartesian positions
    cell : (3, 3) lattice vectors as rows
    pbc : periodic along each cell vector (None: all)

    Returns
    -------
    (volume, empty_fraction) : the occupied volume (the box's where it is filled) and the empty fraction of the
        box (0 where it is filled or has too few atoms to tell)
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    periodic = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    n = len(positions)
    if n == 0:
        return float("nan"), 0.0
    frac, lengths, box = _box_extent(positions, cell, periodic)
    if not (np.isfinite(box) and box > 0) or n < 8 * OCCUPANCY_ATOMS_PER_BIN:
        return box, 0.0
    volume, empty = box, 0.0
    for _ in range(2):  # the second pass sizes the bins by the density of the occupied volume
        edge = (OCCUPANCY_ATOMS_PER_BIN * volume / n) ** (1.0 / 3.0)
        nb = np.maximum(1, np.round(lengths / edge)).astype(np.int64)
        if nb.prod() < 8:
            break
        idx = np.minimum((frac * nb).astype(np.int64), nb - 1)
        flat = np.ravel_multi_index(idx.T, tuple(nb))
        filled = np.count_nonzero(np.bincount(flat, minlength=int(nb.prod())))
        frac_empty = 1.0 - filled / float(nb.prod())
        if volume == box:
            if frac_empty <= VACUUM_EMPTY_FRACTION:
                return box, 0.0
            empty = frac_empty
        volume = box * filled / float(nb.prod())
    return volume, empty


def estimate_nn_distance(
    positions: np.ndarray, cell: np.ndarray, bins: int = 240, pbc=None, *, volume: float | None = None
) -> float:
    """First-peak position of g(r) (same length unit as ``positions``).

    Parameters
    ----------
    positions : (N, 3) Cartesian positions
    cell : (3, 3) lattice vectors as rows
    bins : histogram bins between 0.55 and 1.45 rho^(-1/3)
    pbc : periodic along each cell vector (None: all); along the others the density counts only the
        atoms' extent (a slab or a particle in vacuum), and no images are made
    volume : the volume the atoms fill (:func:`occupied_volume`'s first value, where the caller has it
        already); None: computed here
    """
    return first_peak(positions, cell, bins, pbc, volume=volume)[0]


def first_peak(positions: np.ndarray, cell: np.ndarray, bins: int = 240, pbc=None, *,
               volume: float | None = None) -> tuple[float, float]:
    """Position and width of the first peak of g(r) (same length unit as ``positions``).

    The width is the standard deviation of the pair distances in the peak, from the Gaussian fit to its
    inner flank with the histogram's smoothing removed (``nan`` where no fit is possible). For independent
    Gaussian displacements of ``sigma`` per coordinate about ideal sites it is ``sqrt(2) sigma``: the thermal
    amplitude that :mod:`trajden.scope` bounds each atom's move by.

    Parameters
    ----------
    positions : (N, 3) Cartesian positions
    cell : (3, 3) lattice vectors as rows
    bins : histogram bins between 0.55 and 1.45 rho^(-1/3)
    pbc : as :func:`estimate_nn_distance`
    volume : as :func:`estimate_nn_distance`
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    n = len(positions)
    periodic = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    if n < 2:
        volume = float("nan")
    elif volume is None:
        volume = occupied_volume(positions, cell, periodic)[0]
    volume = float(volume)
    if n < 2 or not np.isfinite(volume) or volume <= 0:
        raise InputError("cannot estimate the nearest-neighbour distance: need >= 2 atoms and a non-degenerate cell",
                         hint=_SCALE_HINT)
    spacing = (volume / n) ** (1.0 / 3.0)
    r_lo, r_hi = 0.55 * spacing, 1.45 * spacing
    nl = NeighborList(cutoff=float(r_hi), full_list=False)
    d = nl.compute(positions, cell, True if periodic.all() else periodic.tolist(), "d")[0]
    d = d[(d > r_lo) & (d < r_hi)]
    if len(d) < 10:
        raise InputError(f"cannot estimate the nearest-neighbour distance: too few pairs ({len(d)} of {n} atoms "
                         "near the typical spacing)", hint=_SCALE_HINT)
    hist, edges = np.histogram(d, bins=bins, range=(r_lo, r_hi))
    r = 0.5 * (edges[1:] + edges[:-1])
    # g(r) itself: pairs per shell over an ideal gas's (n/2 rho 4 pi r^2 dr), on coarse bins; a peak must stand
    # above MIN_PEAK_HEIGHT by 3 standard deviations of an ideal gas's counts (few pairs fluctuate a lot)
    coarse = 6 if bins % 6 == 0 else 1
    ideal = 0.5 * n * (n / volume) * 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    h_c, ideal_c = hist.reshape(-1, coarse).sum(1), ideal.reshape(-1, coarse).sum(1)
    if not np.any(h_c >= MIN_PEAK_HEIGHT * ideal_c + 3.0 * np.sqrt(ideal_c)):
        raise InputError(f"cannot estimate the nearest-neighbour distance: no peak in g(r) (highest "
                         f"{(h_c / ideal_c).max():.2f}; an ideal gas gives 1)", hint=_SCALE_HINT)
    # a Gaussian-blurred shell at distance d has pair-distance density ~ r * N(r; d, s): divide by r (not r^2)
    g = hist / r
    width = max(2, bins // 80)
    kernel = np.exp(-0.5 * (np.arange(-3 * width, 3 * width + 1) / width) ** 2)
    g = np.convolve(g, kernel / kernel.sum(), mode="same")
    # a peak: the maximum within +-0.08 rho^(-1/3) (ignores small ripples) reaching a fifth of the highest
    half = max(1, int(round(0.08 * spacing / (r[1] - r[0]))))
    padded = np.pad(g, half, mode="edge")
    window_max = np.max(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)
    peaks = np.flatnonzero((g >= window_max) & (g >= 0.2 * g.max()))
    peaks = peaks[(peaks > 0) & (peaks < bins - 1)]
    k = int(peaks[0]) if len(peaks) else int(np.argmax(g))
    # the peak's inner flank is free of the next shell: fit a Gaussian (parabola in log g) to it
    lo = k
    while lo > 0 and g[lo - 1] >= 0.4 * g[k]:
        lo -= 1
    sel = np.arange(lo, min(k + 2, bins))
    dr = r[1] - r[0]
    if len(sel) >= 4 and np.all(g[sel] > 0):
        a, b, _ = np.polyfit(r[sel], np.log(g[sel]), 2)
        if a < 0:
            centre = -b / (2 * a)
            if r[lo] <= centre <= r[min(k + 1, bins - 1)] + 4 * dr:
                # the fitted variance less the smoothing kernel's (width bins)
                var = -1.0 / (2.0 * a) - (width * dr) ** 2
                return float(centre), float(np.sqrt(max(var, 0.0)))
    return float(r[k]), float("nan")
