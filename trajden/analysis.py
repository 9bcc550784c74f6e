"""Analysis of trajden stores: phase fractions, RDF, Steinhardt order parameters, vibration averaging.

Everything here reads the store layout of :mod:`trajden.names` (dims ``frame``/``atom``/``spatial``/
``cell_vector``; the cell's rows are the lattice vectors). :func:`phase_fractions` stays lazy on
dask-backed stores; :func:`rdf` and :func:`steinhardt` load one frame.

:func:`vibration_average` and :func:`unwrap` implement the baseline "vibration averaging" (a centred
moving time average of unwrapped positions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from trajden import names
from trajden.errors import StoreVariableError

DIM_STRUCTURE = "structure"
_AXES = {"x": 0, "y": 1, "z": 2}


# --- helpers ---------------------------------------------------------------------------------------


def _open(ds_or_path) -> xr.Dataset:
    """``ds_or_path`` as a Dataset (a path is opened lazily as a Zarr 3 store)."""
    if isinstance(ds_or_path, xr.Dataset):
        return ds_or_path
    return xr.open_zarr(ds_or_path, consolidated=False)


def positions_var(ds: xr.Dataset, raw: bool = False, required: bool = True) -> str | None:
    """Name of the positions variable to use: the denoised one, or with ``raw`` the stored raw one.

    With ``raw`` and no ``positions_raw`` in the store, raises
    :class:`~trajden.errors.StoreVariableError` (a ``KeyError``) (or returns ``None``
    when not ``required``).
    """
    if not raw:
        if names.VAR_POSITIONS not in ds:
            raise StoreVariableError(f"the store has no {names.VAR_POSITIONS!r} variable")
        return names.VAR_POSITIONS
    if names.VAR_POSITIONS_RAW in ds:
        return names.VAR_POSITIONS_RAW
    if required:
        raise StoreVariableError(
            f"raw positions requested but the store has no {names.VAR_POSITIONS_RAW!r} variable",
            hint="process the trajectory with --keep-raw to store them",
        )
    return None


def structure_codes(method: str) -> tuple[int, ...]:
    """Label codes the classifier ``method`` ("acna" or "ptm") can produce."""
    if method == names.ACNA:
        return names.ACNA_CODES
    if method == names.PTM:
        return names.PTM_CODES
    raise ValueError(f"unknown method {method!r}; expected one of {names.CLASSIFIERS}")


def _frame_index(ds: xr.Dataset, frame: int) -> int:
    n = ds.sizes[names.DIM_FRAME]
    i = int(frame)
    if not -n <= i < n:
        raise IndexError(f"frame {frame} out of range for a store of {n} frames")
    return i % n


def _frame_cell(ds: xr.Dataset, i: int) -> np.ndarray:
    if names.VAR_CELL not in ds:
        raise KeyError(f"the store has no {names.VAR_CELL!r} variable")
    cell = ds[names.VAR_CELL]
    if names.DIM_FRAME in cell.dims:
        cell = cell.isel({names.DIM_FRAME: i})
    return np.asarray(cell.transpose(names.DIM_CELL_VECTOR, names.DIM_SPATIAL).values, dtype=np.float64)


def frame_arrays(ds: xr.Dataset, frame: int, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (N, 3) float64, cell (3, 3) rows)`` of one frame (raw positions with ``raw``)."""
    i = _frame_index(ds, frame)
    var = positions_var(ds, raw)
    pos = ds[var].isel({names.DIM_FRAME: i}).transpose(names.DIM_ATOM, names.DIM_SPATIAL).values
    pos = np.asarray(pos, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        raise ValueError(f"frame {i} of {var!r} holds non-finite positions (frame not written?)")
    return pos, _frame_cell(ds, i)


def freud_system(positions: np.ndarray, cell: np.ndarray):
    """A freud ``(box, points)`` system from positions and a cell whose rows are the lattice vectors.

    freud's :meth:`~freud.box.Box.from_matrix` takes the lattice vectors as *columns* and represents
    the box in its own upper-triangular orientation, centred at the origin; the positions are therefore
    mapped through fractional coordinates (wrapped into [0, 1)), which both rotates them into freud's
    frame and wraps them into the box.
    """
    import freud

    cell = np.asarray(cell, dtype=np.float64)
    if np.linalg.det(cell) <= 0:
        raise ValueError("the cell must be right-handed with non-zero volume")
    box = freud.box.Box.from_matrix(cell.T)
    frac = np.asarray(positions, dtype=np.float64) @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    frac[frac >= 1.0] = 0.0  # floor rounding at the upper edge
    points = box.make_absolute(frac.astype(np.float32))
    return box, np.ascontiguousarray(points, dtype=np.float32)


def cell_widths(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths (distance between opposite faces) of a cell given by rows."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


# --- phase fractions ------------------------------------------------------------------------------


def region_mask(ds: xr.Dataset, region, raw: bool = False) -> xr.DataArray | None:
    """Boolean atom mask (``(atom,)`` or ``(frame, atom)``, lazy where the store is) from ``region``.

    ``region`` is ``None`` (every atom), a boolean mask (DataArray with dims ``(atom,)`` or
    ``(frame, atom)``, or an array of that shape), or a slab dict
    ``{"axis": "z", "min": 10.0, "max": 20.0}`` (angstrom, ``min <= coordinate < max``) on the
    denoised positions, or on the raw ones with ``raw`` when the store has them. A slab dict may add
    ``"wrap": True`` to wrap positions into the cell (assumed to start at the origin) first.
    """
    if region is None:
        return None
    if isinstance(region, Mapping):
        axis = region.get("axis", "z")
        axis = _AXES[axis.lower()] if isinstance(axis, str) else int(axis)
        lo = float(region.get("min", -np.inf))
        hi = float(region.get("max", np.inf))
        var = positions_var(ds, raw=raw, required=False) or names.VAR_POSITIONS
        pos = ds[var]
        if region.get("wrap", False):
            pos = wrap_dataarray(pos, ds[names.VAR_CELL])
        coord = pos.isel({names.DIM_SPATIAL: axis})
        return (coord >= lo) & (coord < hi)
    if isinstance(region, xr.DataArray):
        mask = region
    else:
        arr = np.asarray(region)
        dims = (names.DIM_ATOM,) if arr.ndim == 1 else (names.DIM_FRAME, names.DIM_ATOM)
        mask = xr.DataArray(arr, dims=dims)
    if names.DIM_ATOM not in mask.dims or not set(mask.dims) <= {names.DIM_FRAME, names.DIM_ATOM}:
        raise ValueError(f"a region mask must have dims (atom,) or (frame, atom); got {mask.dims}")
    if mask.dtype != bool:
        raise TypeError(f"a region mask must be boolean; got {mask.dtype}")
    # positional alignment with the store (a mask built from numpy carries no coordinates)
    return mask.drop_vars([c for c in mask.coords if c in (names.DIM_FRAME, names.DIM_ATOM)])


def wrap_dataarray(positions: xr.DataArray, cell: xr.DataArray) -> xr.DataArray:
    """Positions wrapped into the cell (rows = lattice vectors, origin at 0); lazy xarray operations."""
    inv = xr.apply_ufunc(
        np.linalg.inv,
        cell.astype(np.float64),
        input_core_dims=[[names.DIM_CELL_VECTOR, names.DIM_SPATIAL]],
        output_core_dims=[["_s", "_v"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"_s": 3, "_v": 3}},
    )
    frac = xr.dot(positions.astype(np.float64).rename({names.DIM_SPATIAL: "_s"}), inv, dim="_s")
    frac = frac - np.floor(frac)
    out = xr.dot(frac.rename({"_v": names.DIM_CELL_VECTOR}), cell.astype(np.float64), dim=names.DIM_CELL_VECTOR)
    return out.transpose(*positions.dims)


def phase_fractions(ds, method: str = "ptm", raw: bool = False, region=None, sublattice: bool = False) -> xr.DataArray:
    """Fraction of atoms in each structure, per frame.

    Parameters
    ----------
    ds : Dataset or path of a store
    method : "ptm" or "acna"
    raw : labels before denoising (``structure_<method>_raw``) instead of after
    region : ``None``, a boolean mask ``(atom,)``/``(frame, atom)`` or a slab dict, see :func:`region_mask`
    sublattice : the PTM labels of the store's sublattice (``trajden process --sublattice``), over the atoms
        of that element only

    Returns
    -------
    DataArray ``(frame, structure)`` named ``phase_fraction``; ``structure`` holds the names
    (:data:`trajden.names.STRUCTURE_NAMES`) of the codes ``method`` can produce. Fractions sum to 1 in
    each written frame; frames not (fully) written -- a label ``-1`` in the region, ``complete`` False,
    or no atom in the region -- are NaN. Lazy when ``ds`` is dask-backed.
    """
    ds = _open(ds)
    var = names.sublattice_var(raw) if sublattice else names.structure_var(method, raw)
    if var not in ds:
        raise KeyError(f"the store has no {var!r} labels")
    codes = structure_codes(names.PTM if sublattice else method)
    labels = ds[var]
    mask = region_mask(ds, region, raw=raw)
    if sublattice:
        from trajden.io.species import atomic_numbers

        z = int(atomic_numbers([ds.attrs[names.ATTR_SUBLATTICE]])[0])
        own = ds[names.VAR_ELEMENT] == z
        mask = own if mask is None else (mask & own)
    if mask is not None:
        labels = labels.where(mask, -2)  # outside the region: neither a structure nor "not written"
    counts = xr.concat([(labels == c).sum(names.DIM_ATOM) for c in codes], dim=DIM_STRUCTURE)
    counts = counts.transpose(names.DIM_FRAME, DIM_STRUCTURE)
    unwritten = (labels == -1).sum(names.DIM_ATOM)
    total = counts.sum(DIM_STRUCTURE)
    valid = (unwritten == 0) & (total > 0)
    if names.VAR_COMPLETE in ds:
        valid = valid & ds[names.VAR_COMPLETE].astype(bool)
    fractions = (counts / total.where(total > 0)).where(valid)
    fractions = fractions.assign_coords({DIM_STRUCTURE: [names.STRUCTURE_NAMES[c] for c in codes]})
    fractions.name = "phase_fraction"
    fractions.attrs = {"method": method, "raw": int(bool(raw)), "long_name": f"{method} phase fraction"}
    return fractions


def ordering_fractions(ds, raw: bool = False) -> xr.DataArray:
    """Fraction of atoms in each PTM chemical ordering (:data:`trajden.names.ORDERING_NAMES`), per frame.

    Only stores of inputs with two or more elements have the ordering; frames not fully written are NaN.
    """
    ds = _open(ds)
    var = names.ordering_var(raw)
    if var not in ds:
        raise KeyError(f"the store has no {var!r} (inputs of one element have no chemical ordering)")
    labels = ds[var]
    codes = sorted(names.ORDERING_NAMES)
    counts = xr.concat([(labels == c).sum(names.DIM_ATOM) for c in codes], dim="ordering")
    counts = counts.transpose(names.DIM_FRAME, "ordering")
    total = counts.sum("ordering")
    valid = ((labels == -1).sum(names.DIM_ATOM) == 0) & (total > 0)
    if names.VAR_COMPLETE in ds:
        valid = valid & ds[names.VAR_COMPLETE].astype(bool)
    out = (counts / total.where(total > 0)).where(valid)
    out = out.assign_coords(ordering=[names.ORDERING_NAMES[c] for c in codes])
    out.name = "ordering_fraction"
    out.attrs = {"raw": int(bool(raw)), "long_name": "PTM chemical ordering fraction"}
    return out


# --- RDF and Steinhardt ---------------------------------------------------------------------------


def rdf(ds, frame: int, raw: bool = False, r_max: float | None = None, bins: int = 200) -> xr.DataArray:
    """Radial distribution function g(r) of one frame (freud).

    ``r_max`` defaults to the smaller of 0.49 of the cell's smallest perpendicular width and six mean
    interatomic spacings ``(V/N)^(1/3)``. Returns a DataArray ``g`` over ``r`` (bin centres, angstrom)
    with the cumulative coordination number as coordinate ``n_r``.
    """
    import freud

    ds = _open(ds)
    pos, cell = frame_arrays(ds, frame, raw)
    box, points = freud_system(pos, cell)
    width = cell_widths(cell).min()
    if r_max is None:
        spacing = (abs(np.linalg.det(cell)) / len(pos)) ** (1.0 / 3.0)
        r_max = min(0.49 * width, 6.0 * spacing)
    if r_max >= 0.5 * width:
        raise ValueError(f"r_max={r_max} must be below half the smallest cell width ({0.5 * width:.4g})")
    calc = freud.density.RDF(bins=int(bins), r_max=float(r_max))
    calc.compute(system=(box, points), reset=True)
    return xr.DataArray(
        np.asarray(calc.rdf, dtype=np.float64),
        dims=("r",),
        coords={"r": np.asarray(calc.bin_centers), "n_r": ("r", np.asarray(calc.n_r))},
        name="g",
        attrs={"frame": _frame_index(ds, frame), "raw": int(bool(raw)), "r_max": float(r_max), "units_r": "angstrom"},
    )


def _neighbor_query(neighbors):
    if isinstance(neighbors, Mapping):
        return dict(neighbors)
    if isinstance(neighbors, (int, np.integer)) and not isinstance(neighbors, bool):
        return {"num_neighbors": int(neighbors)}
    if isinstance(neighbors, (float, np.floating)):
        return {"r_max": float(neighbors), "exclude_ii": True}
    raise TypeError(f"neighbors must be an int (count), a float (cutoff) or a freud query dict; got {neighbors!r}")


def steinhardt(
    ds,
    frame: int,
    l: int | Sequence[int] = (4, 6),  # noqa: E741
    raw: bool = False,
    average: bool = True,
    neighbors: int | float | Mapping = 12,
) -> xr.Dataset:
    """Steinhardt bond-order parameters q_l per atom for one frame (freud).

    With ``average`` (default) the Lechner-Dellago averaged q_l (averaged over the first shell
    including the atom itself). ``neighbors`` selects the neighbour shell: an int is a number of
    nearest neighbours (default 12), a float a cutoff radius in angstrom, a dict a freud query.

    Returns a Dataset with ``q<l>`` over ``atom`` (with ``atom_id`` where the store has it) and the
    mean ``q<l>_mean`` for each l.
    """
    import freud

    ds = _open(ds)
    ls = [int(l)] if np.isscalar(l) else [int(x) for x in l]
    pos, cell = frame_arrays(ds, frame, raw)
    box, points = freud_system(pos, cell)
    calc = freud.order.Steinhardt(l=ls, average=bool(average))
    calc.compute(system=(box, points), neighbors=_neighbor_query(neighbors))
    q = np.asarray(calc.particle_order, dtype=np.float64).reshape(len(points), len(ls))
    coords = {}
    if names.COORD_ATOM_ID in ds.coords:
        coords[names.COORD_ATOM_ID] = (names.DIM_ATOM, np.asarray(ds[names.COORD_ATOM_ID].values))
    out = xr.Dataset(coords=coords)
    for k, li in enumerate(ls):
        out[f"q{li}"] = xr.DataArray(q[:, k], dims=(names.DIM_ATOM,))
        out[f"q{li}_mean"] = xr.DataArray(np.nanmean(q[:, k]))
    out.attrs = {"frame": _frame_index(ds, frame), "raw": int(bool(raw)), "average": int(bool(average))}
    return out


# --- nuclei ----------------------------------------------------------------------------------------


def largest_cluster(positions: np.ndarray, cell: np.ndarray, mask: np.ndarray, link: float) -> np.ndarray:
    """Atoms of the largest cluster of ``mask`` atoms (single linkage within ``link``, periodic cell).

    Returns a boolean mask over all atoms (all False when ``mask`` selects none).
    """
    from trajden.validation import defect_clusters

    out = np.zeros(len(positions), dtype=bool)
    clusters = defect_clusters(positions, cell, np.asarray(mask, dtype=bool), link)
    if clusters:
        out[clusters[0]] = True
    return out


def solid_like(positions: np.ndarray, cell: np.ndarray, q_threshold: float = 0.7, solid_bonds: int = 7,
               neighbors: int | float | Mapping = 12) -> tuple[np.ndarray, np.ndarray]:
    """ten Wolde-Frenkel solid-like atoms and their largest cluster, from raw (thermal) positions (freud).

    The classic nucleation measure that needs no denoising: a bond is solid-like when the normalised
    dot product of the two atoms' q6m vectors exceeds ``q_threshold`` (0.7 for fcc/bcc, Filion et al. 2010),
    an atom is solid-like with at least ``solid_bonds`` solid-like bonds, and solid-like neighbours are
    clustered. It is the reference :func:`nucleus_sizes` compares denoised nuclei with.

    Returns (solid-like mask, mask of the largest solid-like cluster), over atoms.
    """
    import freud

    box, points = freud_system(positions, cell)
    calc = freud.order.SolidLiquid(l=6, q_threshold=float(q_threshold), solid_threshold=int(solid_bonds),
                                   normalize_q=True)
    calc.compute(system=(box, points), neighbors=_neighbor_query(neighbors))
    solid = np.asarray(calc.num_connections) >= int(solid_bonds)
    idx = np.asarray(calc.cluster_idx)
    largest = np.zeros(len(points), dtype=bool)
    if solid.any():
        ids, counts = np.unique(idx[solid], return_counts=True)
        largest = solid & (idx == ids[np.argmax(counts)])
    return solid, largest


def nucleus_sizes(ds, method: str = "acna", frames=None, link: float = 1.2) -> xr.Dataset:
    """Largest crystalline cluster per frame: denoised and raw labels, and the ten Wolde-Frenkel nucleus of
    the raw positions (:func:`solid_like`).

    ``link``: cluster linkage in nearest-neighbour distances (the frame's denoising scale, or 2.556 A when
    the store has none). Returns a Dataset over ``frame`` with ``denoised``, and where the store kept the raw
    positions (``--keep-raw``) ``raw`` and ``solid_like`` (atom counts).
    """
    ds = _open(ds)
    codes = [c for c in structure_codes(method) if c not in (names.OTHER, names.ICO)]
    n_frames = ds.sizes[names.DIM_FRAME]
    sel = list(range(n_frames)) if frames is None else [_frame_index(ds, f) for f in frames]
    has_raw = positions_var(ds, raw=True, required=False) is not None
    rows = {"denoised": [], "raw": [], "solid_like": []} if has_raw else {"denoised": []}
    for i in sel:
        pos, cell = frame_arrays(ds, i)
        nn = float(ds[names.VAR_SCALE][i]) if names.VAR_SCALE in ds else 2.556
        lab = np.asarray(ds[names.structure_var(method)][i].values)
        rows["denoised"].append(int(largest_cluster(pos, cell, np.isin(lab, codes), link * nn).sum()))
        if has_raw:
            raw_pos, _ = frame_arrays(ds, i, raw=True)
            lab_raw = np.asarray(ds[names.structure_var(method, raw=True)][i].values)
            rows["raw"].append(int(largest_cluster(raw_pos, cell, np.isin(lab_raw, codes), link * nn).sum()))
            rows["solid_like"].append(int(solid_like(raw_pos, cell)[1].sum()))
    frame_coord = np.asarray(ds[names.DIM_FRAME].values)[list(sel)]
    return xr.Dataset({k: xr.DataArray(np.asarray(v), dims=(names.DIM_FRAME,)) for k, v in rows.items()},
                      coords={names.DIM_FRAME: frame_coord},
                      attrs={"method": method, "link_nn": link})


# --- vibration averaging --------------------------------------------------------------------------


def _cells_per_frame(cells, n_frames: int) -> np.ndarray:
    cells = np.asarray(cells, dtype=np.float64)
    if cells.shape == (3, 3):
        cells = np.broadcast_to(cells, (n_frames, 3, 3))
    if cells.shape != (n_frames, 3, 3):
        raise ValueError(f"cells must be (3, 3) or ({n_frames}, 3, 3); got {cells.shape}")
    return cells


def unwrap(positions, cells) -> np.ndarray:
    """Unwrap positions ``(F, N, 3)`` frame to frame with the minimum image of each frame's cell.

    ``cells`` is ``(3, 3)`` or ``(F, 3, 3)`` with lattice vectors as rows (orthogonal or triclinic).
    The displacement between consecutive frames is reduced to its minimum image in the later frame's
    cell and accumulated in Cartesian coordinates (correct under a fluctuating cell). Assumes no atom
    moves more than half a cell width between frames. Frame 0 is returned as given.
    """
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must be (F, N, 3); got {x.shape}")
    cells = _cells_per_frame(cells, len(x))
    out = np.empty_like(x)
    if len(x) == 0:
        return out.astype(np.result_type(positions, np.float32))
    out[0] = x[0]
    for f in range(1, len(x)):
        d = x[f] - x[f - 1]
        shift = np.rint(d @ np.linalg.inv(cells[f]))
        out[f] = out[f - 1] + d - shift @ cells[f]
    return out.astype(np.result_type(np.asarray(positions).dtype, np.float32), copy=False)


def wrap(positions, cells) -> np.ndarray:
    """Positions ``(F, N, 3)`` (or ``(N, 3)`` with one cell) wrapped into cells starting at the origin."""
    x = np.asarray(positions, dtype=np.float64)
    single = x.ndim == 2
    if single:
        x = x[None]
    cells = _cells_per_frame(cells, len(x))
    frac = np.einsum("fni,fij->fnj", x, np.linalg.inv(cells))
    frac -= np.floor(frac)
    out = np.einsum("fnj,fjk->fnk", frac, cells)
    out = out.astype(np.result_type(np.asarray(positions).dtype, np.float32), copy=False)
    return out[0] if single else out


def vibration_average(positions, window: int, ends: str = "truncate") -> np.ndarray:
    """Centred moving time average of unwrapped positions ``(F, N, 3)`` over ``window`` frames.

    Frame ``f`` averages frames ``f - (window - 1) // 2 ... f + window // 2``. At the ends the window
    shrinks: with ``ends="truncate"`` (default) it is cut at the trajectory's ends (as pandas'
    ``rolling(center=True, min_periods=1)``), with ``ends="symmetric"`` it shrinks symmetrically so it
    stays centred (the first and last frames are then left as they are).

    The positions must be unwrapped (see :func:`unwrap`); atoms are independent, so large trajectories
    can be processed in atom chunks. Accumulates in float64; returns the input's float dtype.
    """
    x = np.asarray(positions)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must be (F, N, 3); got {x.shape}")
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    if ends not in ("truncate", "symmetric"):
        raise ValueError(f"ends must be 'truncate' or 'symmetric'; got {ends!r}")
    n = len(x)
    out_dtype = np.result_type(x.dtype, np.float32)
    if window == 1 or n == 0:
        return x.astype(out_dtype, copy=True)
    before, after = (window - 1) // 2, window // 2
    f = np.arange(n)
    if ends == "truncate":
        lo = np.maximum(f - before, 0)
        hi = np.minimum(f + after, n - 1) + 1
    else:
        half_lo = np.minimum(before, np.minimum(f, n - 1 - f))
        half_hi = np.minimum(after, np.minimum(f, n - 1 - f))
        lo, hi = f - half_lo, f + half_hi + 1
    cs = np.zeros((n + 1,) + x.shape[1:], dtype=np.float64)
    np.cumsum(x, axis=0, dtype=np.float64, out=cs[1:])
    avg = (cs[hi] - cs[lo]) / (hi - lo)[:, None, None]
    return avg.astype(out_dtype, copy=False)
