"""Matplotlib figures of trajden stores: phase fractions over time, denoising convergence.

Figures are written headless (Agg). Every function takes a Dataset or the path of a store.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from trajden import analysis, names
from trajden.errors import StoreError, StoreVariableError

#: line colour per structure name (readable on white; the same structure always gets the same colour)
STRUCTURE_COLORS: dict[str, str] = {
    "other": "#7f7f7f",
    "fcc": "#2ca02c",
    "hcp": "#d62728",
    "bcc": "#1f77b4",
    "ico": "#e6a800",
    "sc": "#9467bd",
    "cd": "#17becf",
    "hd": "#8c564b",
}

#: particle colour per structure name for pictures of atoms (OVITO's structure colours)
ATOM_COLORS: dict[str, tuple[float, float, float]] = {
    "other": (0.85, 0.85, 0.85),
    "fcc": (0.4, 1.0, 0.4),
    "hcp": (1.0, 0.4, 0.4),
    "bcc": (0.4, 0.4, 1.0),
    "ico": (0.95, 0.8, 0.2),
    "sc": (0.95, 0.1, 0.95),
    "cd": (0.07, 0.63, 1.0),
    "hd": (1.0, 0.67, 0.2),
}

#: line colour per PTM chemical ordering (:data:`trajden.names.ORDERING_NAMES`)
ORDERING_COLORS: dict[str, str] = {
    "none": "#7f7f7f",
    "pure": "#000000",
    "L10": "#ff7f0e",
    "L12_A": "#2ca02c",
    "L12_B": "#98df8a",
    "B2": "#1f77b4",
    "zincblende_wurtzite": "#17becf",
    "boron_nitride": "#8c564b",
}

#: ``plot_fractions`` methods beyond the classifiers: PTM's chemical ordering, the sublattice's PTM labels
ORDERING, SUBLATTICE = "ordering", "sublattice"
PLOT_METHODS = (*names.CLASSIFIERS, ORDERING, SUBLATTICE)

METHOD_TITLES = {names.ACNA: "a-CNA", names.PTM: "PTM", ORDERING: "PTM chemical ordering"}


def _label_var(method: str, raw: bool) -> str:
    if method == ORDERING:
        return names.ordering_var(raw)
    if method == SUBLATTICE:
        return names.sublattice_var(raw)
    return names.structure_var(method, raw)


def _fractions(ds: xr.Dataset, method: str, raw: bool, region) -> xr.DataArray:
    """Per-frame fractions along :data:`trajden.analysis.DIM_STRUCTURE` for one of :data:`PLOT_METHODS`."""
    if method == ORDERING:
        if region is not None:
            raise ValueError("region is not supported with the chemical ordering")
        return analysis.ordering_fractions(ds, raw=raw).rename(ordering=analysis.DIM_STRUCTURE)
    if method == SUBLATTICE:
        return analysis.phase_fractions(ds, raw=raw, region=region, sublattice=True)
    return analysis.phase_fractions(ds, method=method, raw=raw, region=region)


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo", "ps"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _time_axis(ds: xr.Dataset) -> tuple[np.ndarray, str]:
    if names.COORD_TIME in ds.coords or names.COORD_TIME in ds:
        t = np.asarray(ds[names.COORD_TIME].values, dtype=np.float64)
        if t.size and np.isfinite(t).any():
            return t, "time (ps)"
    return np.arange(ds.sizes[names.DIM_FRAME]), "frame"


def _save(fig, out) -> str:
    out = os.fspath(out)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def plot_fractions(
    ds_or_path,
    out,
    method: str = "acna",
    region=None,
    threshold: float = 0.005,
    title: str | None = None,
) -> str:
    """Phase fractions vs time: denoised solid, raw (before denoising) dashed, one colour per structure.

    ``method``: ``"acna"``, ``"ptm"``, ``"ordering"`` (PTM's chemical ordering, inputs of two or more
    elements) or ``"sublattice"`` (PTM labels of the store's sublattice, ``trajden process --sublattice``).
    Only structures whose fraction exceeds ``threshold`` in some frame (raw or denoised) are drawn.
    ``region`` restricts the count (see :func:`trajden.analysis.region_mask`). Frames not written leave
    gaps. Returns the path written.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    ds = analysis._open(ds_or_path)
    series = {}
    if method not in PLOT_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {PLOT_METHODS}")
    colors = ORDERING_COLORS if method == ORDERING else STRUCTURE_COLORS
    for raw in (False, True):
        if _label_var(method, raw) in ds:
            series[raw] = _fractions(ds, method, raw, region).compute()
    if not series:
        raise StoreVariableError(f"the store has no {method} labels ({_label_var(method, False)})")
    t, xlabel = _time_axis(ds)
    structures = [
        s
        for s in next(iter(series.values()))[analysis.DIM_STRUCTURE].values
        if any(
            np.nanmax(np.append(fr.sel({analysis.DIM_STRUCTURE: s}).values, 0.0)) > threshold for fr in series.values()
        )
    ]
    from matplotlib import patheffects

    fig, ax = plt.subplots(figsize=(8, 4.5))
    # raw dashed on top of the denoised solid line, with a white outline: where the two coincide (a structure
    # absent before and after, a frame denoising did not change) the dashes stay visible on the solid line
    outline = [patheffects.Stroke(linewidth=3.0, foreground="white"), patheffects.Normal()]
    for s in structures:
        color = colors.get(str(s), "black")
        for raw, fr in sorted(series.items()):
            ax.plot(
                t,
                100.0 * fr.sel({analysis.DIM_STRUCTURE: s}).values,
                color=color,
                linestyle="--" if raw else "-",
                linewidth=1.4 if raw else 2.2,
                zorder=3 if raw else 2,
                path_effects=outline if raw else None,
                marker=("s" if raw else "o") if len(t) == 1 else None,
            )
    ax.set_xlabel(xlabel, fontsize=12)
    ax.set_ylabel("fraction of atoms (%)", fontsize=12)
    ax.set_ylim(-2, 102)
    if len(t) > 1:
        ax.set_xlim(np.nanmin(t), np.nanmax(t))
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=10)
    handles = [Line2D([], [], color=colors.get(str(s), "black"), lw=2.5, label=str(s)) for s in structures]
    if len(series) > 1:
        handles += [
            Line2D([], [], color="black", lw=2.0, ls="-", label="denoised"),
            Line2D([], [], color="black", lw=1.4, ls="--", label="raw"),
        ]
    elif True in series:
        handles.append(Line2D([], [], color="black", lw=1.3, ls="--", label="raw"))
    # frames without a result (failed, bad input, not written): marked on the axis instead of a value
    missing = ~np.isfinite(next(iter(series.values())).values).all(axis=1)
    if missing.any():
        ax.plot(np.asarray(t)[missing], np.zeros(int(missing.sum())), linestyle="none", marker="x", color="0.4",
                markersize=7, clip_on=False)
        handles.append(Line2D([], [], linestyle="none", marker="x", color="0.4", label="no result"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=11)
    model = ds.attrs.get(names.ATTR_MODEL)
    what = METHOD_TITLES.get(method, method)
    if method == SUBLATTICE:
        what = f"PTM, {ds.attrs.get(names.ATTR_SUBLATTICE, '')} sublattice"
    default = f"{what} {'fractions' if method == ORDERING else 'phase fractions'}" + (
        f" (model {model})" if model else "")
    ax.set_title(title if title is not None else default, fontsize=12)
    return _save(fig, out)


def plot_convergence(ds_or_path, out, title: str | None = None) -> str:
    """Convergence of the iterative denoising.

    With a per-iteration ``rms_history(frame, iteration)`` variable: RMS update vs iteration (median
    over frames, 10-90 % band, a few frames drawn thin). Otherwise: the final residual and the number of
    iterations per frame vs time. The tolerance (store attribute ``tol``) is drawn where known.
    Returns the path written.
    """
    plt = _pyplot()
    ds = analysis._open(ds_or_path)
    tol = ds.attrs.get(names.ATTR_TOL)
    tol = float(tol) if isinstance(tol, (int, float, np.number)) and tol > 0 else None
    title = title if title is not None else "denoising convergence"
    if names.VAR_RMS_HISTORY in ds:
        hist = ds[names.VAR_RMS_HISTORY].transpose(names.DIM_FRAME, names.DIM_ITERATION)
        h = np.asarray(hist.values, dtype=np.float64)
        h = h[np.isfinite(h).any(axis=1)]
        if h.size == 0:
            raise StoreError("rms_history holds no finite value (no frame written yet)")
        it = np.arange(1, h.shape[1] + 1)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for row in h[np.linspace(0, len(h) - 1, min(len(h), 20)).astype(int)]:
            ax.plot(it, row, color="#1f77b4", alpha=0.25, lw=0.8)
        counts = np.isfinite(h).sum(axis=0)
        keep = counts > 0
        med = np.nanmedian(h[:, keep], axis=0)
        lo, hi = np.nanpercentile(h[:, keep], [10, 90], axis=0)
        ax.fill_between(it[keep], lo, hi, color="#1f77b4", alpha=0.2, label="10-90 % of frames")
        ax.plot(it[keep], med, color="#1f77b4", lw=2.2, marker="o", ms=4, label=f"median of {len(h)} frames")
        if tol:
            ax.axhline(tol, color="#d62728", ls="--", lw=1.5, label=f"tol = {tol:g} Å")
        ax.set_yscale("log")
        ax.set_xlabel("iteration", fontsize=12)
        ax.set_ylabel("RMS position update (Å)", fontsize=12)
        ax.set_xticks(it if len(it) <= 20 else np.unique(np.linspace(1, it[-1], 10).astype(int)))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=10, frameon=False)
        ax.set_title(title, fontsize=12)
        return _save(fig, out)

    if names.VAR_RESIDUAL not in ds and names.VAR_ITERATIONS not in ds:
        raise StoreVariableError(
            f"the store has neither {names.VAR_RMS_HISTORY!r} nor {names.VAR_RESIDUAL!r}/{names.VAR_ITERATIONS!r}"
        )
    t, xlabel = _time_axis(ds)
    panels = [v for v in (names.VAR_RESIDUAL, names.VAR_ITERATIONS) if v in ds]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    status = np.asarray(ds[names.VAR_STATUS].values) if names.VAR_STATUS in ds else None
    complete = np.asarray(ds[names.VAR_COMPLETE].values, dtype=bool) if names.VAR_COMPLETE in ds else None
    for ax, var in zip(axes, panels):
        y = np.asarray(ds[var].values, dtype=np.float64)
        if complete is not None:
            y = np.where(complete, y, np.nan)
        if var == names.VAR_ITERATIONS:
            y = np.where(y > 0, y, np.nan)
        ax.plot(t, y, color="#1f77b4", lw=1.5, marker="." if len(t) <= 200 else None, ms=4)
        if status is not None:
            for code, color in (
                (names.FRAME_STATUS_NOT_CONVERGED, "#e6a800"),
                (names.FRAME_STATUS_DIVERGED, "#d62728"),
            ):
                sel = status == code
                if sel.any():
                    ax.scatter(t[sel], y[sel], color=color, zorder=3, s=18, label=names.FRAME_STATUS_NAMES[code])
        if var == names.VAR_RESIDUAL:
            ax.set_ylabel("final RMS update (Å)", fontsize=11)
            if np.nanmax(np.append(y, 0)) > 0:
                ax.set_yscale("log")
            if tol:
                ax.axhline(tol, color="#d62728", ls="--", lw=1.2, label=f"tol = {tol:g} Å")
        else:
            ax.set_ylabel("iterations", fontsize=11)
            maxit = ds.attrs.get(names.ATTR_ITERATIONS)
            if isinstance(maxit, (int, np.integer)) and maxit > 0:
                ax.axhline(maxit, color="gray", ls=":", lw=1.2, label=f"max = {maxit}")
                ax.set_ylim(0, maxit + 1)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9, loc="best", framealpha=0.85)
    axes[-1].set_xlabel(xlabel, fontsize=12)
    axes[0].set_title(title, fontsize=12)
    return _save(fig, out)
