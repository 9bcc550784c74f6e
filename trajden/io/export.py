"""Export of trajden stores: LAMMPS text dumps, extended XYZ, and a rendered picture of one frame.

Exports stream one frame at a time, so they work on stores larger than memory. Files whose name ends in
``.gz`` are gzip-compressed. The store keeps no cell origin: cells are written starting at the origin.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from trajden import analysis, names
from trajden.errors import StoreError, StoreVariableError
from trajden.io.dump_writer import write_dump

#: label variables exported as per-atom columns, in this order (those present in the store): the classifiers'
#: structures, PTM's chemical ordering and the sublattice's PTM labels (inputs of two or more elements), after
#: then before denoising, and the scope flags (0 denoised, else why the atom was left raw)
LABEL_VARS = tuple(
    v for raw in (False, True)
    for v in (*(names.structure_var(c, raw) for c in names.CLASSIFIERS), names.ordering_var(raw),
              names.sublattice_var(raw))
) + (names.VAR_SCOPE,)


# --- helpers ---------------------------------------------------------------------------------------


def _open_text(out):
    out = os.fspath(out)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    if out.endswith(".gz"):
        return gzip.open(out, "wt", encoding="ascii", newline="\n")
    return open(out, "w", encoding="ascii", newline="\n")


def select_frames(ds: xr.Dataset, frames=None) -> list[int]:
    """Frame indices to export: ``frames`` as given (ints, negatives allowed), or every complete frame.

    Without a ``complete`` variable, every frame whose cell is finite counts as written.
    """
    n = ds.sizes[names.DIM_FRAME]
    if frames is None:
        if names.VAR_COMPLETE in ds:
            ok = np.asarray(ds[names.VAR_COMPLETE].values, dtype=bool)
        elif names.VAR_CELL in ds:
            ok = np.isfinite(np.asarray(ds[names.VAR_CELL].values)).all(axis=(1, 2))
        else:
            ok = np.ones(n, dtype=bool)
        return [int(i) for i in np.flatnonzero(ok)]
    if isinstance(frames, (int, np.integer)):
        frames = [frames]
    out = []
    for f in frames:
        i = int(f)
        if not -n <= i < n:
            raise IndexError(f"frame {f} out of range for a store of {n} frames")
        out.append(i % n)
    if names.VAR_COMPLETE in ds:
        done = np.asarray(ds[names.VAR_COMPLETE].values, dtype=bool)
        missing = [i for i in out if not done[i]]
        if missing:
            why = ""
            if names.VAR_STATUS in ds:
                code = int(ds[names.VAR_STATUS].values[missing[0]])
                why = f" (status {names.FRAME_STATUS_NAMES.get(code, 'not written')})"
            raise StoreError(f"frame {missing[0]} is not complete{why}; {len(missing)} selected frame(s) are not",
                             hint="select complete frames with --frames, or process the missing ones first")
    return out


def lammps_cell(cell: np.ndarray) -> tuple[np.ndarray, bool]:
    """The LAMMPS form of a cell given by rows: ``a = (lx, 0, 0)``, ``b = (xy, ly, 0)``, ``c = (xz, yz, lz)``.

    Returns ``(cell_lmp, rotated)``; ``rotated`` is False where ``cell`` is already in that form (within
    1e-10 relative), so positions need no change. Otherwise positions must be mapped with
    ``x @ inv(cell) @ cell_lmp`` (a rotation). Raises for a left-handed or degenerate cell.
    """
    cell = np.asarray(cell, dtype=np.float64)
    if not np.isfinite(cell).all():
        raise ValueError("the cell holds non-finite values (frame not written?)")
    if np.linalg.det(cell) <= 0:
        raise ValueError("the cell must be right-handed with non-zero volume for LAMMPS")
    a, b, c = cell
    lx = np.linalg.norm(a)
    ahat = a / lx
    xy = b @ ahat
    ly = np.sqrt(max(b @ b - xy * xy, 0.0))
    xz = c @ ahat
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(max(c @ c - xz * xz - yz * yz, 0.0))
    lmp = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    tol = 1e-10 * max(lx, ly, lz)
    rotated = not np.allclose(cell, lmp, rtol=0.0, atol=tol)
    return lmp, rotated


def store_elements(ds: xr.Dataset) -> np.ndarray | None:
    """(atom,) element symbols recorded in the store ("X" where unknown), or None if it records none.

    Reads the ``element`` variable (atomic numbers, 0 = unknown); a store without it, or whose atoms are
    all unknown, gives None.
    """
    from ase.data import chemical_symbols

    if names.VAR_ELEMENT not in ds:
        return None
    z = np.asarray(ds[names.VAR_ELEMENT].values, dtype=np.int64)
    if not (z > names.ELEMENT_UNKNOWN).any():
        return None
    return np.asarray(chemical_symbols, dtype=str)[z]


def _frame_data(ds: xr.Dataset, i: int, pos_var: str, extra: Sequence[str]) -> xr.Dataset:
    keep = [pos_var, *extra, names.VAR_CELL] + [v for v in (names.VAR_ORIGIN, names.VAR_PBC) if v in ds]
    return ds[keep].isel({names.DIM_FRAME: i}).load()


def _origin(fr: xr.Dataset) -> np.ndarray:
    """The frame's cell origin (zero for stores written before the origin was kept)."""
    if names.VAR_ORIGIN not in fr:
        return np.zeros(3)
    origin = np.asarray(fr[names.VAR_ORIGIN].values, dtype=np.float64)
    return origin if np.isfinite(origin).all() else np.zeros(3)


# --- LAMMPS dump ----------------------------------------------------------------------------------


def export_dump(ds, out, frames=None, raw: bool = False, displacement: bool = True) -> str:
    """Write a LAMMPS text dump (``ITEM: ATOMS id type [element] x y z <labels...> [displacement]``).

    Parameters
    ----------
    ds : Dataset or path of a store
    out : file name (``.gz``: gzip-compressed)
    frames : frame indices; default every complete frame
    raw : write the raw positions (``positions_raw``, needs ``--keep-raw``) instead of the denoised ones
    displacement : add the ``displacement`` column where the store has it

    The ``element`` column holds the element symbols the store records (none if it records none).
    Every label variable present (:data:`LABEL_VARS`: ``structure_acna``, ``structure_ptm``,
    ``ordering_ptm``, ``structure_ptm_sublattice``, their ``_raw`` versions, and ``scope``) is a column.
    Orthogonal cells give ``BOX BOUNDS pp pp pp``; other cells the triclinic ``xy xz yz`` form,
    with positions rotated (about the origin) into LAMMPS's orientation where the cell is not already in
    it. The box starts at the stored origin (``xlo ylo zlo`` of the input; zero for stores without one), so
    a dump read, processed and exported has the input's box bounds. Returns the path written.
    """
    ds = analysis._open(ds)
    pos_var = analysis.positions_var(ds, raw)
    labels = [v for v in LABEL_VARS if v in ds]
    extra = labels + ([names.VAR_DISPLACEMENT] if displacement and names.VAR_DISPLACEMENT in ds else [])
    n = ds.sizes[names.DIM_ATOM]
    ids = (
        np.asarray(ds[names.COORD_ATOM_ID].values, dtype=np.int64)
        if names.COORD_ATOM_ID in ds.coords or names.COORD_ATOM_ID in ds
        else np.arange(1, n + 1, dtype=np.int64)
    )
    types = np.asarray(ds[names.VAR_TYPE].values, dtype=np.int64) if names.VAR_TYPE in ds else np.ones(n, np.int64)
    steps = np.asarray(ds[names.COORD_STEP].values) if names.COORD_STEP in ds.coords or names.COORD_STEP in ds else None
    elements = store_elements(ds)
    formats = {v: "%d" for v in labels} | {v: "%.6g" for v in extra[len(labels):]}

    def frames_out():
        for i in select_frames(ds, frames):
            fr = _frame_data(ds, i, pos_var, extra)
            pos = np.asarray(fr[pos_var].transpose(names.DIM_ATOM, names.DIM_SPATIAL).values, dtype=np.float64)
            if not np.isfinite(pos).all():
                raise StoreError(f"frame {i} of {pos_var!r} holds non-finite positions (frame not written?)")
            cell = np.asarray(fr[names.VAR_CELL].transpose(names.DIM_CELL_VECTOR, names.DIM_SPATIAL).values)
            origin = _origin(fr)
            lmp, rotated = lammps_cell(cell)
            if rotated:
                pos = (pos - origin) @ np.linalg.solve(cell, lmp) + origin
            else:
                lmp = cell  # already in LAMMPS form: the stored numbers, not recomputed (last-digit equal bounds)
            pbc = np.asarray(fr[names.VAR_PBC].values) if names.VAR_PBC in fr else None
            yield {
                "positions": pos,
                "cell": lmp,
                "origin": origin,
                "step": int(steps[i]) if steps is not None else i,
                "pbc": None if pbc is None or (pbc < 0).any() else pbc > 0,
                "extra": {v: np.asarray(fr[v].values, dtype=np.float64) for v in extra},
            }

    write_dump(out, frames_out(), ids=ids, types=types, elements=elements, float_format="%.9g", formats=formats,
               bounds_format=".17g", trailing_space=False)
    return os.fspath(out)


# --- extended XYZ ---------------------------------------------------------------------------------


def _numbers(types: np.ndarray, symbols, elements: np.ndarray | None = None) -> np.ndarray:
    from ase.data import atomic_numbers

    if symbols is None:  # the store's elements; 0 ("X") where it records none
        if elements is None:
            return np.zeros(len(types), dtype=np.int64)
        return np.array([atomic_numbers[e] for e in elements], dtype=np.int64)
    if isinstance(symbols, str):
        return np.full(len(types), atomic_numbers[symbols], dtype=np.int64)
    if isinstance(symbols, Mapping):
        return np.array([atomic_numbers[symbols[int(t)]] for t in types], dtype=np.int64)
    if isinstance(symbols, Iterable):
        seq = list(symbols)  # symbols[k] is the element of type k + 1 (LAMMPS types start at 1)
        return np.array([atomic_numbers[seq[int(t) - 1]] for t in types], dtype=np.int64)
    raise TypeError(f"symbols must be None, an element, a {{type: element}} dict or a sequence; got {symbols!r}")


def export_extxyz(ds, out, frames=None, raw: bool = False, symbols=None) -> str:
    """Write an extended XYZ trajectory with ase (``.gz``: gzip-compressed).

    Per-atom arrays: ``id``, ``type``, every label variable present and ``displacement``; per-frame
    info: ``step``, ``time`` (ps). Atoms carry the element symbols the store records (``element``),
    ``X`` where it records none; ``symbols`` overrides them, mapping atom types to elements (one symbol
    for all, a ``{type: symbol}`` dict, or a sequence for types 1, 2, ...). ``raw`` writes the raw
    positions. Returns the path written.
    """
    import ase
    import ase.io

    ds = analysis._open(ds)
    pos_var = analysis.positions_var(ds, raw)
    labels = [v for v in LABEL_VARS if v in ds]
    extra = labels + ([names.VAR_DISPLACEMENT] if names.VAR_DISPLACEMENT in ds else [])
    n = ds.sizes[names.DIM_ATOM]
    ids = (
        np.asarray(ds[names.COORD_ATOM_ID].values, dtype=np.int64)
        if names.COORD_ATOM_ID in ds.coords or names.COORD_ATOM_ID in ds
        else np.arange(1, n + 1, dtype=np.int64)
    )
    types = np.asarray(ds[names.VAR_TYPE].values, dtype=np.int64) if names.VAR_TYPE in ds else np.ones(n, np.int64)
    numbers = _numbers(types, symbols, store_elements(ds) if symbols is None else None)
    has = {c: (c in ds.coords or c in ds) for c in (names.COORD_STEP, names.COORD_TIME)}
    with _open_text(out) as fh:
        for i in select_frames(ds, frames):
            fr = _frame_data(ds, i, pos_var, extra)
            pos = np.asarray(fr[pos_var].transpose(names.DIM_ATOM, names.DIM_SPATIAL).values, dtype=np.float64)
            if not np.isfinite(pos).all():
                raise StoreError(f"frame {i} of {pos_var!r} holds non-finite positions (frame not written?)")
            cell = np.asarray(fr[names.VAR_CELL].transpose(names.DIM_CELL_VECTOR, names.DIM_SPATIAL).values)
            atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
            atoms.set_array("id", ids)
            atoms.set_array("type", types)
            for v in labels:
                atoms.set_array(v, np.asarray(fr[v].values, dtype=np.int64))
            for v in extra[len(labels) :]:
                atoms.set_array(v, np.asarray(fr[v].values, dtype=np.float64))
            atoms.info["frame"] = i
            if has[names.COORD_STEP]:
                atoms.info["step"] = int(ds[names.COORD_STEP].values[i])
            if has[names.COORD_TIME]:
                atoms.info["time"] = float(ds[names.COORD_TIME].values[i])
            ase.io.write(fh, atoms, format="extxyz")
    return os.fspath(out)


# --- picture of one frame -------------------------------------------------------------------------


def _panel_data(ds: xr.Dataset, i: int, method: str):
    """``[(title, positions, labels)]`` for the raw (left) and denoised (right) panels present."""
    panels = []
    for raw in (True, False):
        lab_var = names.structure_var(method, raw)
        if lab_var not in ds:
            continue
        pos_var = analysis.positions_var(ds, raw, required=False)
        title = "raw (before denoising)" if raw else "denoised"
        if pos_var is None:  # raw labels on the denoised positions (positions_raw not stored)
            pos_var = names.VAR_POSITIONS
            title = "raw labels (on denoised positions)"
        fr = ds[[pos_var, lab_var]].isel({names.DIM_FRAME: i}).load()
        pos = np.asarray(fr[pos_var].transpose(names.DIM_ATOM, names.DIM_SPATIAL).values, dtype=np.float64)
        lab = np.asarray(fr[lab_var].values, dtype=np.int64)
        if not np.isfinite(pos).all() or (lab < 0).all():
            raise StoreError(f"frame {i} is not written ({pos_var} / {lab_var})")
        panels.append((title, pos, lab))
    if not panels:
        raise StoreVariableError(f"the store has no {method} labels ({names.structure_var(method)})")
    return panels


def _slab_selection(pos_lmp: np.ndarray, lmp: np.ndarray, slab, n_atoms: int) -> np.ndarray:
    """Mask of atoms in the slab (``pos_lmp`` wrapped, LAMMPS orientation; slab along z)."""
    lz = lmp[2, 2]
    if slab is None:
        spacing = (abs(np.linalg.det(lmp)) / max(n_atoms, 1)) ** (1.0 / 3.0)
        thickness = min(2.0 * spacing, lz)
        lo, hi = 0.5 * (lz - thickness), 0.5 * (lz + thickness)
    else:
        lo, hi = float(slab.get("min", -np.inf)), float(slab.get("max", np.inf))
    z = pos_lmp[:, 2]
    return (z >= lo) & (z < hi)


def _wrapped_lammps(pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lmp, _ = lammps_cell(cell)
    frac = pos @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    return frac @ lmp, lmp


def _structure_legend(fig, panels, method: str) -> None:
    """Legend below the panels: structure colours with the whole-frame percentage in each panel."""
    from matplotlib.lines import Line2D

    from trajden.plotting import ATOM_COLORS, METHOD_TITLES

    handles = []
    for c in analysis.structure_codes(method):
        name = names.STRUCTURE_NAMES[c]
        pct = [100.0 * np.mean(lab == c) for _, _, lab in panels]
        if max(pct) > 0:
            label = f"{name}  " + " → ".join(f"{v:.1f}%" for v in pct)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    ls="",
                    markersize=10,
                    markerfacecolor=ATOM_COLORS[name],
                    markeredgecolor="#333333",
                    label=label,
                )
            )
    title = f"{METHOD_TITLES.get(method, method)} (whole frame" + (", raw → denoised)" if len(panels) > 1 else ")")
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 4),
        frameon=False,
        fontsize=11,
        title=title,
        title_fontsize=11,
    )


def _render_matplotlib(panels, cell, out, method, slab, title):
    from trajden.plotting import ATOM_COLORS, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.4), squeeze=False)
    for ax, (ptitle, pos, lab) in zip(axes[0], panels):
        p, lmp = _wrapped_lammps(pos, cell)
        sel = _slab_selection(p, lmp, slab, len(pos))
        order = np.argsort(p[sel, 2])  # draw lower atoms first
        xy = p[sel][order, :2]
        colors = [ATOM_COLORS.get(names.STRUCTURE_NAMES.get(int(c), "other"), (0, 0, 0)) for c in lab[sel][order]]
        outline = np.array([[0, 0], lmp[0, :2], lmp[0, :2] + lmp[1, :2], lmp[1, :2], [0, 0]])
        ax.plot(outline[:, 0], outline[:, 1], color="black", lw=1.0)
        ax.set_aspect("equal")
        span = np.ptp(outline, axis=0).max()
        ax.set_xlim(outline[:, 0].min() - 0.03 * span, outline[:, 0].max() + 0.03 * span)
        ax.set_ylim(outline[:, 1].min() - 0.03 * span, outline[:, 1].max() + 0.03 * span)
        fig.canvas.draw()
        # marker diameter ~ 0.6 mean spacing, in points
        spacing = (abs(np.linalg.det(lmp)) / max(len(pos), 1)) ** (1.0 / 3.0)
        bbox = ax.get_window_extent()
        pts_per_unit = bbox.width / fig.dpi * 72.0 / (ax.get_xlim()[1] - ax.get_xlim()[0])
        size = (0.6 * spacing * pts_per_unit) ** 2
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=colors, edgecolors="#333333", linewidths=0.3)
        ax.set_title(f"{ptitle}\n{sel.sum()} of {len(pos)} atoms in the slab", fontsize=12)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    _structure_legend(fig, panels, method)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(out, dpi=130)
    plt.close(fig)


def _render_ovito(panels, cell, out, method, slab, title, size=(700, 700)):
    """Render each panel with OVITO's Tachyon renderer, then compose them with matplotlib."""
    import tempfile

    from ovito.data import DataCollection
    from ovito.pipeline import Pipeline, StaticSource
    from ovito.vis import TachyonRenderer, Viewport

    from trajden.plotting import ATOM_COLORS, _pyplot

    plt = _pyplot()
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (_, pos, lab) in enumerate(panels):
            p, lmp = _wrapped_lammps(pos, cell)
            sel = np.ones(len(p), dtype=bool) if slab is None else _slab_selection(p, lmp, slab, len(p))
            data = DataCollection()
            data.create_cell(np.column_stack([lmp.T, np.zeros(3)]), pbc=(True, True, True))
            parts = data.create_particles(count=int(sel.sum()))
            parts.create_property("Position", data=p[sel])
            colors = np.array(
                [ATOM_COLORS.get(names.STRUCTURE_NAMES.get(int(c), "other"), (0, 0, 0)) for c in lab[sel]]
            )
            parts.create_property("Color", data=colors.reshape(-1, 3))
            spacing = (abs(np.linalg.det(lmp)) / max(len(p), 1)) ** (1.0 / 3.0)
            parts.vis.radius = 0.4 * spacing
            pipeline = Pipeline(source=StaticSource(data=data))
            pipeline.add_to_scene()
            try:
                if slab is None:
                    vp = Viewport(type=Viewport.Type.Perspective, camera_dir=(-1.0, -0.7, -0.6))
                else:
                    vp = Viewport(type=Viewport.Type.Top)
                vp.zoom_all(size=size)
                fname = os.path.join(tmp, f"panel{k}.png")
                vp.render_image(size=size, filename=fname, background=(1.0, 1.0, 1.0), renderer=TachyonRenderer())
                images.append(plt.imread(fname))
            finally:
                pipeline.remove_from_scene()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.6), squeeze=False)
    for ax, img, (ptitle, _, _) in zip(axes[0], images, panels):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(ptitle, fontsize=12)
    _structure_legend(fig, panels, method)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(out, dpi=130)
    plt.close(fig)


def render_frame(ds, frame: int, out, method: str = "acna", slab: Mapping | None = None, renderer: str = "auto") -> str:
    """Picture of one frame coloured by structure: raw (left) vs denoised (right), side by side.

    ``renderer``: "ovito" (OVITO's Tachyon renderer; needs a Vulkan loader, e.g. ``libvulkan1`` and
    ``mesa-vulkan-drivers``, even headless), "matplotlib" (a slab seen along z, drawn as discs), or
    "auto" (OVITO, falling back to matplotlib when OVITO cannot render). ``slab`` is
    ``{"min": z0, "max": z1}`` in angstrom along the cell's third axis (positions wrapped, LAMMPS
    orientation); by default matplotlib shows a central slab about two atomic spacings thick and OVITO
    the whole cell. Without ``positions_raw`` the raw labels are drawn on the denoised positions.
    Returns the path written; the renderer used is in :data:`last_renderer`.
    """
    global last_renderer, _ovito_failed
    ds = analysis._open(ds)
    i = analysis._frame_index(ds, frame)
    panels = _panel_data(ds, i, method)
    cell = analysis._frame_cell(ds, i)
    out = os.fspath(out)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    step = f", step {int(ds[names.COORD_STEP].values[i])}" if names.COORD_STEP in ds.coords else ""
    time = f", t = {float(ds[names.COORD_TIME].values[i]):g} ps" if names.COORD_TIME in ds.coords else ""
    title = f"frame {i}{step}{time}"
    if renderer not in ("auto", "ovito", "matplotlib"):
        raise ValueError(f"renderer must be 'auto', 'ovito' or 'matplotlib'; got {renderer!r}")
    if renderer == "ovito" or (renderer == "auto" and not _ovito_failed):
        try:
            _render_ovito(panels, cell, out, method, slab, title)
            last_renderer = "ovito"
            return out
        except Exception:
            if renderer == "ovito":
                raise
            _ovito_failed = True  # do not retry in this process (e.g. no Vulkan loader)
    _render_matplotlib(panels, cell, out, method, slab, title)
    last_renderer = "matplotlib"
    return out


#: the renderer :func:`render_frame` used last ("ovito" or "matplotlib")
last_renderer: str | None = None
_ovito_failed = False
