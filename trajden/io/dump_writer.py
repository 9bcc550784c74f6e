"""The LAMMPS text-dump writer: every dump trajden or its pipelines write goes through :func:`write_frame`.

A frame is written as LAMMPS writes it with ``dump custom``::

    ITEM: TIME              (only with ``time``)
    ITEM: TIMESTEP
    ITEM: NUMBER OF ATOMS
    ITEM: BOX BOUNDS [xy xz yz] pp pp pp
    ITEM: ATOMS id type [element] x y z [extra columns ...]

The box follows https://docs.lammps.org/Howto_triclinic.html (lattice vectors as rows of a lower-triangular
cell; a triclinic box is stored as its bounding box plus tilts), the inverse of
:func:`trajden.io.lammps_dump.lammps_box_to_cell`. Callers keep their own choices (atom order, rounding, number
formats) and pass them as arguments. The atom lines are written with Python ``%`` formats (one format per
column, several times faster than ``np.savetxt``) or, with ``float_format=None``, by ``pyarrow.csv`` (shortest
round-trip text, about three times faster again; the choice of the benchmark dumps of 1e6 atoms).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["cell_to_lammps_bounds", "format_frame", "write_dump", "write_frame"]

#: coordinate convention -> dump columns
COORDINATE_COLUMNS: dict[str, tuple[str, str, str]] = {
    "unscaled": ("x", "y", "z"),
    "scaled": ("xs", "ys", "zs"),
    "unwrapped": ("xu", "yu", "zu"),
    "scaled_unwrapped": ("xsu", "ysu", "zsu"),
}

#: per-atom element name column (LAMMPS ``dump custom ... element`` with ``dump_modify element``)
ELEMENT_COLUMN = "element"

_CHUNK_ROWS = 1 << 18  # atom lines formatted at a time by the %-format writer (bounds its memory)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def cell_to_lammps_bounds(cell: np.ndarray, origin: np.ndarray, pbc=None) -> tuple[str, np.ndarray]:
    """BOX BOUNDS keywords and numbers of a lower-triangular cell: the inverse of ``lammps_box_to_cell``.

    Parameters
    ----------
    cell : (3, 3) array
        Lattice vectors as rows; must be lower-triangular (a along x, b in the xy plane).
    origin : (3,) array
        ``(xlo, ylo, zlo)``.
    pbc : three booleans, optional
        Boundary flags: ``pp`` where periodic, ``ff`` where not (default: all periodic).

    Returns
    -------
    keywords : str
        ``"pp pp pp"`` for an orthogonal cell, ``"xy xz yz pp pp pp"`` for a triclinic one (with the flags).
    bounds : (3, 2) or (3, 3) float64
        ``lo hi`` per axis, or the bounding box ``lo_bound hi_bound tilt`` of a triclinic cell.

    Raises
    ------
    ValueError
        If the cell is not lower-triangular.
    """
    flags = " ".join("pp" if p else "ff" for p in (np.ones(3, bool) if pbc is None else np.asarray(pbc, bool)))
    cell = np.asarray(cell, dtype=np.float64)
    o = np.asarray(origin, dtype=np.float64)
    if cell[0, 1] or cell[0, 2] or cell[1, 2]:
        raise ValueError("a LAMMPS (restricted triclinic) cell must be lower-triangular: a along x, b in the xy plane")
    xy, xz, yz = cell[1, 0], cell[2, 0], cell[2, 1]
    hi = o + np.diag(cell)
    if not (xy or xz or yz):
        return flags, np.array([[o[0], hi[0]], [o[1], hi[1]], [o[2], hi[2]]])
    return f"xy xz yz {flags}", np.array(
        [
            [o[0] + min(0.0, xy, xz, xy + xz), hi[0] + max(0.0, xy, xz, xy + xz), xy],
            [o[1] + min(0.0, yz), hi[1] + max(0.0, yz), xz],
            [o[2], hi[2], yz],
        ]
    )


def _header(step, time, n, keywords, bounds, bounds_format, names) -> str:
    out = [] if time is None else [f"ITEM: TIME\n{float(time)!r}\n"]
    out.append(f"ITEM: TIMESTEP\n{int(step)}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS {keywords}\n")
    out.extend(" ".join(format(float(v), bounds_format) for v in row) + "\n" for row in bounds)
    out.append("ITEM: ATOMS " + " ".join(names) + "\n")
    return "".join(out)


def _is_text(fh) -> bool:
    """Whether ``fh`` takes ``str`` (else bytes)."""
    if isinstance(fh, io.TextIOBase):
        return True
    if isinstance(fh, io.RawIOBase | io.BufferedIOBase):  # also GzipFile, BZ2File, LZMAFile, BytesIO
        return False
    mode = getattr(fh, "mode", None)  # wrappers such as tempfile.NamedTemporaryFile
    return isinstance(mode, str) and "b" not in mode


def _default_format(values: np.ndarray, float_format: str) -> str:
    if values.dtype.kind in "iub":
        return "%d"
    if values.dtype.kind in "USO":
        return "%s"
    return float_format


def _body_percent(columns: list[np.ndarray], fmts: list[str], trailing_space: bool) -> Iterable[str]:
    """Atom lines by ``%`` formatting, in chunks of :data:`_CHUNK_ROWS`."""
    row = " ".join(fmts) + (" \n" if trailing_space else "\n")
    n = len(columns[0])
    for start in range(0, n, _CHUNK_ROWS):
        lists = [c[start : start + _CHUNK_ROWS].tolist() for c in columns]
        yield "".join([row % r for r in zip(*lists, strict=True)])


def _body_arrow(columns: list[np.ndarray], trailing_space: bool) -> bytes:
    """Atom lines by ``pyarrow.csv`` (integers as such, floats as their shortest round-trip text)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    n = len(columns[0])
    arrays = [pa.array(c) for c in columns]
    if trailing_space:  # an empty last field: the space LAMMPS writes at the end of every atom line
        arrays.append(pa.nulls(n, pa.string()))
    table = pa.Table.from_arrays(arrays, names=[f"c{k}" for k in range(len(arrays))])
    sink = pa.BufferOutputStream()
    opts = pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    pacsv.write_csv(table, sink, write_options=opts)
    return sink.getvalue().to_pybytes()


def write_frame(
    fh,
    positions: np.ndarray,
    cell: np.ndarray,
    origin: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    types: np.ndarray | None = None,
    *,
    step: int = 0,
    time: float | None = None,
    elements: np.ndarray | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    coordinates: str = "unscaled",
    pbc=None,
    bounds: np.ndarray | None = None,
    float_format: str | None = "%.10g",
    formats: Mapping[str, str] | None = None,
    bounds_format: str = "",
    trailing_space: bool = True,
) -> None:
    """Write one LAMMPS dump frame (``ITEM: ATOMS id type [element] <coordinates> <extra...>``) to ``fh``.

    Parameters
    ----------
    fh : file object
        A text handle (``str`` is written) or a binary one (ASCII bytes).
    positions : (N, 3) array
        Cartesian positions, written in the given atom order.
    cell : (3, 3) array
        Lattice vectors as rows, lower-triangular (LAMMPS's restricted triclinic form).
    origin : (3,) array, optional
        ``(xlo, ylo, zlo)``; default zero.
    ids, types : (N,) int arrays, optional
        Default ``1..N`` and all 1.
    step : int
        ``ITEM: TIMESTEP``.
    time : float, optional
        ``ITEM: TIME`` (written first, as ``repr``), omitted when None.
    elements : (N,) str array, optional
        Adds an ``element`` column after ``type``.
    extra : mapping of column name -> (N,) array, optional
        Further per-atom columns, after the coordinates, in the mapping's order.
    coordinates : {"unscaled", "scaled", "unwrapped", "scaled_unwrapped"}
        Coordinate columns (``x``, ``xs``, ``xu``, ``xsu``); the scaled ones write
        ``(positions - origin) @ inv(cell)``.
    pbc : three booleans, optional
        Boundary flags (``pp`` periodic, ``ff`` not); default all periodic.
    bounds : (3, 2) or (3, 3) array, optional
        The BOX BOUNDS numbers to write as given (e.g. kept to the last digit from a dump read before)
        instead of those computed from ``cell`` and ``origin``.
    float_format : str or None
        ``%`` format of the float columns (coordinates, float extras). None writes every column with
        ``pyarrow.csv`` instead (shortest round-trip text: ``0`` and ``100`` rather than ``0.0`` and
        ``100.0``), the fastest writer; ``formats`` must then be empty.
    formats : mapping of column name -> ``%`` format, optional
        Per-column formats overriding the defaults (``%d`` for integer columns, ``%s`` for text,
        ``float_format`` for floats).
    bounds_format : str
        :func:`format` spec of the BOX BOUNDS numbers; ``""`` writes ``repr`` (exact, shortest).
    trailing_space : bool
        End each atom line with a space, as LAMMPS does.

    Raises
    ------
    ValueError
        On a cell that is not lower-triangular, an unknown coordinate convention, per-atom arrays whose
        length is not N, or ``formats`` given with ``float_format=None``.
    """
    if coordinates not in COORDINATE_COLUMNS:
        raise ValueError(f"unknown coordinates {coordinates!r}; expected one of {tuple(COORDINATE_COLUMNS)}")
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    cell = np.asarray(cell, dtype=np.float64)
    origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    if coordinates.startswith("scaled"):
        pos = (pos - origin) @ np.linalg.inv(cell)
    keywords, box = cell_to_lammps_bounds(cell, origin, pbc)
    if bounds is not None:
        box = np.asarray(bounds, dtype=np.float64)
    named: dict[str, np.ndarray] = {
        "id": np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64),
        "type": np.ones(n, dtype=np.int64) if types is None else np.asarray(types, dtype=np.int64),
    }
    if elements is not None:
        named[ELEMENT_COLUMN] = np.asarray(elements).astype(str)
    named.update(zip(COORDINATE_COLUMNS[coordinates], pos.T, strict=True))
    for name, values in (extra or {}).items():
        named[name] = np.asarray(values)
    for name, values in named.items():
        if values.shape != (n,):
            raise ValueError(f"column {name!r} has shape {values.shape}, expected ({n},)")
    header = _header(step, time, n, keywords, box, bounds_format, named)
    text = _is_text(fh)
    fh.write(header if text else header.encode("ascii"))
    columns = list(named.values())
    if float_format is None:
        if formats:
            raise ValueError("per-column formats need a float_format (float_format=None writes with pyarrow)")
        body = _body_arrow(columns, trailing_space)
        fh.write(body.decode("ascii") if text else body)
        return
    fmts = [(formats or {}).get(name) or _default_format(v, float_format) for name, v in named.items()]
    for chunk in _body_percent(columns, fmts, trailing_space):
        fh.write(chunk if text else chunk.encode("ascii"))


def format_frame(
    positions: np.ndarray,
    cell: np.ndarray,
    origin: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    types: np.ndarray | None = None,
    step: int = 0,
    time: float | None = None,
    coordinates: str = "unscaled",
    extra: dict[str, np.ndarray] | None = None,
    fmt: str = "%.10g",
    elements: np.ndarray | None = None,
) -> str:
    """Text of one LAMMPS dump frame, as LAMMPS writes it: :func:`write_frame` into a string.

    Parameters
    ----------
    positions, cell, origin, ids, types, step, time, coordinates, extra, elements
        As for :func:`write_frame`.
    fmt : str
        ``%`` format of the coordinates and of every ``extra`` column (integer ones included).

    Returns
    -------
    str
        The frame's text (box bounds as ``repr``, atom lines ending in a space).
    """
    out = io.StringIO()
    write_frame(out, positions, cell, origin, ids, types, step=step, time=time, elements=elements, extra=extra,
                coordinates=coordinates, float_format=fmt, formats=dict.fromkeys(extra or {}, fmt))
    return out.getvalue()


def write_dump(path: str | os.PathLike, frames: Iterable[Mapping], **options) -> str:
    """Write a LAMMPS text dump of several frames (``.gz``, ``.bz2``, ``.xz``: compressed).

    Parameters
    ----------
    path : str or path-like
        The file; missing parent folders are made.
    frames : iterable of mappings
        Per frame, the arguments of :func:`write_frame` (``positions``, ``cell`` and any of the others);
        consumed one at a time, so a generator keeps one frame in memory.
    **options
        :func:`write_frame` arguments shared by every frame (e.g. ``float_format``, ``formats``,
        ``bounds_format``, ``trailing_space``); a frame's own entries take precedence.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    opener = _OPENERS.get(os.path.splitext(path)[1], open)
    with opener(path, "wb") as fh:
        for frame in frames:
            write_frame(fh, **{**options, **frame})
    return path
