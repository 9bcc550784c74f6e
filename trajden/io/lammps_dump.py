"""Fast reader for LAMMPS text dumps (``dump atom`` / ``dump custom``), plain or compressed (gzip, bz2, xz).

One pass over the file builds a :class:`DumpIndex` (byte offsets, timesteps, atom counts of every frame);
:meth:`LammpsDump.read` then seeks straight to a frame and parses its ATOMS block with ``pyarrow.csv``
(several M atoms/s, against ~0.4 M atoms/s for MDAnalysis' own ``LAMMPSDUMP`` reader).

Box conventions follow https://docs.lammps.org/Howto_triclinic.html: the cell has the lattice vectors as
ROWS, ``a = (xhi - xlo, 0, 0)``, ``b = (xy, yhi - ylo, 0)``, ``c = (xz, yz, zhi - zlo)``, and the origin is
``(xlo, ylo, zlo)``; a triclinic dump stores the bounding box, which is converted back exactly as LAMMPS
documents. Scaled coordinates (``xs``, ``xsu``) become ``origin + s @ cell``. Positions are returned in
the LAMMPS frame (the origin is NOT subtracted), sorted by atom id.

Dumps are written by :mod:`trajden.io.dump_writer` (its :func:`format_frame` and :func:`cell_to_lammps_bounds`
are re-exported here).

The module also registers the format with MDAnalysis as ``"TRAJDEN_LAMMPSDUMP"`` (reader
:class:`TrajdenDumpReader` and topology parser :class:`TrajdenDumpParser`), leaving MDAnalysis' own
``"LAMMPSDUMP"`` untouched::

    u = mda.Universe("traj.dump", format="TRAJDEN_LAMMPSDUMP")

:class:`trajden.io.readers.Trajectory` reads dumps through the same reader (the contract and the frame
records: :mod:`trajden.io.base`).
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from MDAnalysis.coordinates.base import ReaderBase
from MDAnalysis.core.topology import Topology
from MDAnalysis.core.topologyattrs import Atomids, Atomtypes, Elements, Masses, Resids, Resnums, Segids
from MDAnalysis.lib.mdamath import triclinic_box, triclinic_vectors
from MDAnalysis.lib.util import store_init_arguments
from MDAnalysis.topology.base import TopologyReaderBase

from trajden.errors import TrajectoryError
from trajden.io.base import DumpFrame, _error, _where
from trajden.io.compression import DECOMPRESS_ERRORS, compression, open_binary
from trajden.io.dump_writer import COORDINATE_COLUMNS, ELEMENT_COLUMN, cell_to_lammps_bounds, format_frame

__all__ = [
    "COORDINATE_COLUMNS",
    "DumpFrame",
    "DumpIndex",
    "LammpsDump",
    "TrajdenDumpParser",
    "TrajdenDumpReader",
    "TrajectoryError",
    "build_index",
    "cell_to_lammps_bounds",
    "format_frame",
    "is_lammps_dump",
    "lammps_box_to_cell",
]

#: MDAnalysis format name of :class:`TrajdenDumpReader` / :class:`TrajdenDumpParser`
MDA_FORMAT = "TRAJDEN_LAMMPSDUMP"

CONVENTIONS = ("auto", *COORDINATE_COLUMNS)

#: LAMMPS ``units`` style -> (length factor to angstrom, time factor to ps); ``lj`` is left unconverted
UNIT_FACTORS: dict[str, tuple[float, float]] = {
    "metal": (1.0, 1.0),
    "real": (1.0, 1e-3),
    "si": (1e10, 1e12),
    "cgs": (1e8, 1e12),
    "electron": (0.529177210903, 1e-3),
    "micro": (1e4, 1e6),
    "nano": (10.0, 1e3),
}

_CHUNK = 16 << 20  # bytes read at a time while indexing
_LINE_COUNT_LIMIT = 4 << 30  # error messages count lines only in the first 4 GiB of a file
_MAX_HEADER_LINES = 64  # a frame header longer than this is not a LAMMPS dump header
_FIXED_ITEM_LINES = {"TIMESTEP": 1, "TIME": 1, "UNITS": 1, "NUMBER OF ATOMS": 1, "BOX BOUNDS": 3}


def _show(raw: bytes | str, limit: int = 60) -> str:
    """Short printable excerpt of a bad line for an error message."""
    text = raw.decode("latin-1") if isinstance(raw, bytes | bytearray | memoryview) else raw
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


# ------------------------------------------------------------------------------------------------
# boxes


def lammps_box_to_cell(bounds: np.ndarray, kind: str = "orthogonal") -> tuple[np.ndarray, np.ndarray]:
    """Convert the three BOX BOUNDS lines of a dump to a cell (lattice vectors as rows) and an origin.

    Parameters
    ----------
    bounds : (3, 2), (3, 3) or (3, 4) array
        The numbers of the three lines after ``ITEM: BOX BOUNDS``.
    kind : {"orthogonal", "triclinic", "general"}
        ``"triclinic"`` for ``ITEM: BOX BOUNDS xy xz yz`` (bounding box plus tilts, restricted triclinic),
        ``"general"`` for ``ITEM: BOX BOUNDS abc origin`` (rows ``ax ay az originx`` ...).

    Returns
    -------
    cell : (3, 3) float64
    origin : (3,) float64
    """
    b = np.asarray(bounds, dtype=np.float64)
    cell = np.zeros((3, 3))
    if kind == "general":
        return b[:, :3].copy(), b[:, 3].copy()
    if kind == "triclinic":
        (xlo_b, xhi_b, xy), (ylo_b, yhi_b, xz), (zlo, zhi, yz) = b[:, :3]
        xlo = xlo_b - min(0.0, xy, xz, xy + xz)
        xhi = xhi_b - max(0.0, xy, xz, xy + xz)
        ylo = ylo_b - min(0.0, yz)
        yhi = yhi_b - max(0.0, yz)
        cell[0] = xhi - xlo, 0.0, 0.0
        cell[1] = xy, yhi - ylo, 0.0
        cell[2] = xz, yz, zhi - zlo
        return cell, np.array([xlo, ylo, zlo])
    (xlo, xhi), (ylo, yhi), (zlo, zhi) = b[:, :2]
    cell[np.diag_indices(3)] = xhi - xlo, yhi - ylo, zhi - zlo
    return cell, np.array([xlo, ylo, zlo])


# ------------------------------------------------------------------------------------------------
# headers


@dataclass
class _Header:
    step: int
    time: float | None
    units: str | None
    n_atoms: int
    box_kind: str
    bounds: np.ndarray
    columns: tuple[str, ...]
    pbc: tuple[bool, bool, bool] = (True, True, True)  # from the boundary flags (pp periodic; f, s, m not)


class _HeaderError(ValueError):
    """A malformed frame header: a short message (no file name) and ``line``, the 0-based line of the header."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.line = line


def _parse_header(text: str) -> _Header:
    """Parse the items of one frame header (everything up to and including the ``ITEM: ATOMS`` line).

    Raises :class:`_HeaderError` (a ``ValueError``) with a short message and the offending line on a
    malformed header.
    """
    lines = text.splitlines()
    step = n_atoms = bounds = columns = None
    time = units = None
    pbc = (True, True, True)
    box_kind = "orthogonal"
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line:
            continue
        if not line.startswith("ITEM:"):
            raise _HeaderError(f"expected an 'ITEM:' line, found {_show(line)}", i - 1)
        item = line[5:].strip()
        if item.startswith("ATOMS"):
            columns = tuple(item.split()[1:])
            break
        key = next((k for k in _FIXED_ITEM_LINES if item.startswith(k)), None)
        if key is None:  # an item trajden does not use: skip its lines
            while i < len(lines) and not lines[i].lstrip().startswith("ITEM:"):
                i += 1
            continue
        body = lines[i : i + _FIXED_ITEM_LINES[key]]
        first_body = i
        i += _FIXED_ITEM_LINES[key]
        if len(body) < _FIXED_ITEM_LINES[key]:
            raise _HeaderError(f"'ITEM: {key}' is cut short", first_body - 1)
        bad = first_body  # the body line being parsed, for the error
        try:
            if key == "TIMESTEP":
                step = int(body[0].split()[0])
            elif key == "TIME":
                time = float(body[0].split()[0])
            elif key == "UNITS":
                units = body[0].strip()
            elif key == "NUMBER OF ATOMS":
                n_atoms = int(body[0].split()[0])
            else:
                words = item.split()[2:]
                flags = [w for w in words if len(w) == 2 and set(w) <= set("pfsm")]
                if "abc" in words:
                    box_kind, width = "general", 4
                elif "xy" in words:
                    box_kind, width = "triclinic", 3
                else:
                    box_kind, width = "orthogonal", 2
                rows = []
                for k, ln in enumerate(body):
                    bad = first_body + k
                    rows.append([float(v) for v in ln.split()[:width]])
                    if len(rows[-1]) != width:
                        raise ValueError("bad")
                bounds = np.array(rows)
        except (ValueError, IndexError):
            shown = body[bad - first_body].strip()
            raise _HeaderError(f"malformed 'ITEM: {key}' data: {_show(shown)}", bad) from None
        if key == "BOX BOUNDS" and len(flags) == 3:
            pbc = tuple(f == "pp" for f in flags)
    missing = [
        name
        for name, value in (
            ("TIMESTEP", step),
            ("NUMBER OF ATOMS", n_atoms),
            ("BOX BOUNDS", bounds),
            ("ATOMS", columns),
        )
        if value is None
    ]
    if missing:
        raise ValueError("header lacks " + ", ".join(f"'ITEM: {m}'" for m in missing))
    if n_atoms < 0:
        raise ValueError(f"negative atom count {n_atoms}")
    return _Header(step, time, units, n_atoms, box_kind, bounds, columns, pbc)


# ------------------------------------------------------------------------------------------------
# index


@dataclass
class DumpIndex:
    """Where every complete frame of one dump file lies.

    Offsets count bytes of the (decompressed) file. ``errors`` maps a frame to the problem found while
    indexing (it is raised when that frame is read); ``warnings`` says what was dropped or assumed.
    """

    path: str
    compression: str | None  # "gzip", "bz2", "xz" or None
    file_size: int
    frame_start: np.ndarray  # (F,) int64, first header item of the frame
    atoms_start: np.ndarray  # (F,) int64, first byte after the ITEM: ATOMS line
    atoms_end: np.ndarray  # (F,) int64, one past the atom block
    steps: np.ndarray  # (F,) int64
    times: np.ndarray  # (F,) float64, ITEM: TIME in ps (converted with ITEM: UNITS), NaN where absent
    n_atoms: np.ndarray  # (F,) int64
    units: str | None = None
    errors: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: for a frame in ``errors``: the line of the problem, counted from the frame's first line (0)
    error_lines: dict[int, int] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frame_start)

    @property
    def gzip(self) -> bool:
        """Whether the file is gzip-compressed (see :attr:`compression`)."""
        return self.compression == "gzip"


class _Stream:
    """Chunked reader over a (possibly decompressing) binary file that keeps absolute offsets."""

    def __init__(self, fileobj, chunk: int = _CHUNK):
        self.f = fileobj
        self.chunk = chunk
        self.buf = b""
        self.base = 0  # absolute offset of buf[0]
        self.eof = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def more(self, keep_from: int) -> bool:
        """Append a chunk, dropping bytes before ``keep_from``; False at end of file."""
        if self.eof:
            return False
        data = self.f.read(self.chunk)
        if not data:
            self.eof = True
            return False
        cut = max(0, keep_from - self.base)
        self.buf = self.buf[cut:] + data
        self.base += cut
        return True

    def line(self, pos: int, keep_from: int) -> tuple[bytes, int, bool] | None:
        """The line starting at ``pos``: (text without newline, offset after it, terminated?); None at EOF."""
        while True:
            k = self.buf.find(b"\n", pos - self.base)
            if k >= 0:
                return self.buf[pos - self.base : k], self.base + k + 1, True
            if not self.more(keep_from):
                rest = self.buf[pos - self.base :]
                return (rest, self.end, False) if rest else None

    def block(self, start: int) -> tuple[int, int]:
        """From ``start``, find the next ``ITEM:`` (or EOF): returns (its offset, newlines before it)."""
        n_lines = 0
        pos = start
        while True:
            rel = pos - self.base
            k = self.buf.find(b"ITEM:", rel)
            if k >= 0:
                return self.base + k, n_lines + self.buf.count(b"\n", rel, k)
            safe = max(rel, len(self.buf) - 4)  # "ITEM:" may straddle the chunk boundary
            n_lines += self.buf.count(b"\n", rel, safe)
            nl = self.buf.rfind(b"\n", rel, safe)  # keep the current line whole (see _whole_last_line)
            keep = self.base + (nl + 1 if nl >= 0 else rel)
            pos = self.base + safe
            if not self.more(min(keep, pos)):
                return self.end, n_lines + self.buf.count(b"\n", pos - self.base)


def _open_binary(path: str, kind: str | bool | None):
    return open_binary(path, kind)


def _check_file(path: str) -> int:
    if not os.path.exists(path):
        raise _error(path, "no such file")
    if os.path.isdir(path):
        raise _error(path, "is a directory, not a LAMMPS dump")
    size = os.path.getsize(path)
    if size == 0:
        raise _error(path, "file is empty")
    return size


def is_lammps_dump(path: str) -> bool:
    """True when the first non-blank line of ``path`` (plain or compressed) starts with ``ITEM:``."""
    try:
        with _open_binary(path, compression(path)) as f:
            head = f.read(4096)
    except DECOMPRESS_ERRORS:
        return False
    return head.lstrip().startswith(b"ITEM:")


def build_index(path: str, chunk: int = _CHUNK) -> DumpIndex:
    """Index every frame of a LAMMPS text dump in one pass (decompressing once if compressed).

    A last frame cut short (header or atom lines missing, last line unterminated) is dropped with a
    warning; problems of other frames are recorded in :attr:`DumpIndex.errors` and raised on reading.

    Raises
    ------
    TrajectoryError
        missing or empty file, not a LAMMPS dump, no complete frame.
    """
    path = os.fspath(path)
    size = _check_file(path)
    gz = compression(path)
    try:
        with _open_binary(path, gz) as f:
            return _scan(path, gz, size, _Stream(f, chunk))
    except DECOMPRESS_ERRORS as exc:
        if isinstance(exc, FileNotFoundError):
            raise _error(path, "no such file") from None
        raise _error(path, f"cannot read ({type(exc).__name__}: {exc})") from None


def _scan(path: str, gz: bool, size: int, s: _Stream) -> DumpIndex:
    starts: list[int] = []
    a_starts: list[int] = []
    a_ends: list[int] = []
    steps: list[int] = []
    times: list[float] = []
    counts: list[int] = []
    errors: dict[int, str] = {}
    error_lines: dict[int, int] = {}
    warnings: list[str] = []
    units: str | None = None

    # skip leading blank lines; the first text must be an ITEM
    pos = 0
    while True:
        got = s.line(pos, pos)
        if got is None:
            raise _error(path, "file is empty" if pos == 0 else "file contains only blank lines")
        text, nxt, _ = got
        if text.strip():
            break
        pos = nxt
    if not text.lstrip().startswith(b"ITEM:"):
        raise _error(path, f"not a LAMMPS text dump (line 1 is {_show(text)}, expected 'ITEM: TIMESTEP')", line=1)

    while True:
        frame = len(starts)
        frame_start = pos
        # --- header: item lines up to and including ITEM: ATOMS
        header_lines = 0
        atoms_start = None
        truncated = False
        while header_lines < _MAX_HEADER_LINES:
            got = s.line(pos, frame_start)
            if got is None:
                truncated = True
                break
            text, nxt, terminated = got
            header_lines += 1
            if not terminated:
                truncated = True
                break
            pos = nxt
            if text.lstrip().startswith(b"ITEM: ATOMS"):
                atoms_start = pos
                break
        if truncated and header_lines == 0 and frame > 0:
            break  # clean end of file
        if truncated:
            warnings.append(f"{_where(path, frame)}: incomplete last frame (header cut short at end of file); dropped")
            break
        if atoms_start is None:
            # no ATOMS item within a sane distance: record the frame as broken and resync on the next ITEM
            header_text = s.buf[frame_start - s.base : pos - s.base].decode("latin-1")
            errors[frame] = f"frame header has no 'ITEM: ATOMS' line (starts with {_show(header_text)})"
            atoms_start = pos
        header_text = s.buf[frame_start - s.base : atoms_start - s.base].decode("latin-1")
        # --- atom block: up to the next ITEM (next frame's TIME/UNITS/TIMESTEP) or EOF
        atoms_end, n_lines = s.block(atoms_start)
        at_eof = s.eof and atoms_end == s.end
        try:
            hdr = _parse_header(header_text)
        except ValueError as exc:
            if at_eof and frame > 0:
                warnings.append(f"{_where(path, frame)}: incomplete last frame ({exc}); dropped")
                break
            if frame not in errors:
                errors[frame] = str(exc)
                error_lines[frame] = getattr(exc, "line", 0)
            hdr = None
        if hdr is not None:
            if hdr.units is not None:
                units = units or hdr.units
            if counts and hdr.n_atoms != counts[0]:
                errors.setdefault(frame, f"atom count {hdr.n_atoms} differs from {counts[0]} in frame 0")
            if at_eof and n_lines == hdr.n_atoms - 1 and _whole_last_line(s, atoms_start, len(hdr.columns)):
                n_lines += 1  # a file without a final newline: its last line is whole (as MDAnalysis reads it)
            if n_lines < hdr.n_atoms:
                if at_eof:
                    warnings.append(
                        f"{_where(path, frame)}: incomplete last frame ({n_lines} of {hdr.n_atoms} atom lines "
                        "complete at end of file); dropped"
                    )
                    break
                errors.setdefault(frame, f"incomplete frame: {n_lines} complete atom lines, header says {hdr.n_atoms}")
        starts.append(frame_start)
        a_starts.append(atoms_start)
        a_ends.append(atoms_end)
        steps.append(hdr.step if hdr else -1)
        times.append(hdr.time if hdr and hdr.time is not None else math.nan)
        counts.append(hdr.n_atoms if hdr else (counts[0] if counts else -1))
        pos = atoms_end
        if at_eof:
            break

    if not starts:
        raise _error(path, "no complete frame in file" + (f" ({warnings[0].split(': ', 2)[-1]})" if warnings else ""))
    steps_a = np.asarray(steps, dtype=np.int64)
    back = np.flatnonzero(np.diff(steps_a) <= 0)
    if len(back):
        warnings.append(
            f"{_where(path, int(back[0]) + 1)}: timestep {steps_a[back[0] + 1]} does not increase "
            f"(previous frame has {steps_a[back[0]]}; {len(back)} such frame(s)); frames kept in file order"
        )
    if units is not None and units not in UNIT_FACTORS:
        warnings.append(f"{path}: units '{units}' are left unconverted (not angstrom / ps)")
    time_factor = UNIT_FACTORS.get(units or "metal", (1.0, 1.0))[1]
    return DumpIndex(
        path=path,
        compression=gz,
        file_size=size,
        frame_start=np.asarray(starts, dtype=np.int64),
        atoms_start=np.asarray(a_starts, dtype=np.int64),
        atoms_end=np.asarray(a_ends, dtype=np.int64),
        steps=steps_a,
        times=np.asarray(times, dtype=np.float64) * time_factor,
        n_atoms=np.asarray(counts, dtype=np.int64),
        units=units,
        errors=errors,
        error_lines=error_lines,
        warnings=warnings,
    )


def _whole_last_line(s: _Stream, block_start: int, n_columns: int) -> bool:
    """At end of file: whether the unterminated text after the last newline is a whole atom line.

    A whole line has as many fields as the ``ITEM: ATOMS`` columns and ends in a complete number (a line
    cut inside its last field cannot be told from a whole one; it has the right count only by chance).
    """
    if not s.eof:
        return False
    rel = max(block_start - s.base, 0)  # the stream keeps at least the last line of the block
    k = s.buf.rfind(b"\n", rel)
    tail = s.buf[(k + 1 if k >= 0 else rel):]
    return bool(tail.strip()) and len(tail.split()) == n_columns


# ------------------------------------------------------------------------------------------------
# atom block parsing

_WS_RUN = re.compile(rb"[ \t\r\f\v]+")
_WS_EDGE = re.compile(rb"(?m)^ | $")
_PA_PARSE = pacsv.ParseOptions(
    delimiter=" ", quote_char=False, double_quote=False, escape_char=False, ignore_empty_lines=True
)


def _unique_names(columns: tuple[str, ...]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for c in columns:
        n = seen.get(c, 0)
        seen[c] = n + 1
        out.append(c if n == 0 else f"{c}__{n}")
    return out


def _arrow_table(block, columns: tuple[str, ...], wanted: dict[str, pa.DataType], trailing: bool):
    names = _unique_names(columns) + (["__trailing__"] if trailing else [])
    return pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=4 << 20),
        parse_options=_PA_PARSE,
        convert_options=pacsv.ConvertOptions(
            column_types=wanted,
            include_columns=list(wanted),
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _diagnose(block: bytes, columns: tuple[str, ...], wanted: dict[str, pa.DataType], n_atoms: int):
    """Find the first bad line of an atom block: (line index within block, message) or None."""
    col_ix = {c: columns.index(c) for c in wanted}
    rows = 0
    for k, raw in enumerate(bytes(block).split(b"\n")):
        fields = raw.split()
        if not fields:
            continue
        rows += 1
        if len(fields) != len(columns):
            return k, (f"expected {len(columns)} columns ({' '.join(columns)}), found {len(fields)}: {_show(raw)}")
        for name, j in col_ix.items():
            if pa.types.is_string(wanted[name]):
                continue
            conv = int if pa.types.is_integer(wanted[name]) else float
            try:
                conv(fields[j])
            except ValueError:
                return k, f"column '{name}' is not a number: {_show(fields[j])} in {_show(raw)}"
    if rows != n_atoms:
        return None, f"atom block has {rows} atom lines, header says {n_atoms}"
    return None


# ------------------------------------------------------------------------------------------------
# frames


def _strings(column) -> np.ndarray:
    """(N,) numpy str array of a pyarrow string column, through its (small) dictionary of distinct values."""
    enc = column.combine_chunks().dictionary_encode() if hasattr(column, "combine_chunks") else column
    words = np.asarray(enc.dictionary.to_pylist(), dtype=str)
    return words[np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.intp)]


_local = threading.local()


def _gzip_handle(path: str, kind: str = "gzip"):
    """A per-thread cached decompressing file (gzip, bz2, xz), so a worker reading frames in order does not
    decompress from 0 each time."""
    cache: dict = getattr(_local, "gz", None)
    if cache is None:
        cache = _local.gz = {}
    f = cache.get(path)
    if f is None:
        if len(cache) >= 4:
            cache.pop(next(iter(cache))).close()
        f = cache[path] = open_binary(path, kind)
    return f


def _drop_gzip_handle(path: str) -> None:
    cache = getattr(_local, "gz", None)
    if cache and path in cache:
        cache.pop(path).close()


class LammpsDump:
    """Random access to the frames of one LAMMPS text dump (plain, gzip, bz2 or xz).

    Parameters
    ----------
    path : str
        The dump file.
    coordinates : {"auto", "unscaled", "scaled", "unwrapped", "scaled_unwrapped"}
        Which coordinate columns to use; ``"auto"`` takes the first present of x, xs, xu, xsu (per frame).
    index : DumpIndex, optional
        A previously built index of this file (e.g. shipped to a worker); built on demand otherwise.

    Notes
    -----
    The object holds no open file: it pickles as its path, options and index. Reads open the file (gzip:
    reuse a per-thread handle, so reading in increasing frame order decompresses the file only once).
    """

    def __init__(self, path: str, coordinates: str = "auto", index: DumpIndex | None = None):
        if coordinates not in CONVENTIONS:
            raise ValueError(f"coordinates={coordinates!r}; expected one of {CONVENTIONS}")
        self.path = os.fspath(path)
        self.coordinates = coordinates
        self._index = index

    @property
    def index(self) -> DumpIndex:
        if self._index is None:
            self._index = build_index(self.path)
        return self._index

    @property
    def n_frames(self) -> int:
        return self.index.n_frames

    @property
    def n_atoms(self) -> int:
        return int(self.index.n_atoms[0])

    @property
    def warnings(self) -> list[str]:
        return self.index.warnings

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.read(i)

    def __repr__(self) -> str:
        n = f"{self.n_frames} frames" if self._index is not None else "not indexed"
        return f"LammpsDump({self.path!r}, {n})"

    # --- reading

    def _bytes(self, start: int, stop: int, frame: int) -> bytes:
        idx = self.index
        try:
            size = os.path.getsize(self.path)
        except OSError:
            raise _error(self.path, "file disappeared since it was indexed", frame) from None
        if size < idx.file_size:
            raise _error(self.path, f"file shrank since it was indexed ({idx.file_size} -> {size} bytes)", frame)
        try:
            if idx.compression:
                f = _gzip_handle(self.path, idx.compression)
                try:
                    f.seek(start)
                    data = f.read(stop - start)
                except BaseException:
                    _drop_gzip_handle(self.path)
                    raise
            else:
                with open(self.path, "rb", buffering=0) as f:
                    f.seek(start)
                    data = f.read(stop - start)
                    while len(data) < stop - start:  # raw reads may return short
                        more = f.read(stop - start - len(data))
                        if not more:
                            break
                        data += more
        except DECOMPRESS_ERRORS as exc:
            raise _error(self.path, f"cannot read ({type(exc).__name__}: {exc})", frame) from None
        if len(data) != stop - start:
            raise _error(self.path, "file ends early (changed since it was indexed?)", frame)
        return data

    def line_number(self, offset: int) -> int | None:
        """1-based line number of byte ``offset`` (None past the first 4 GiB; used only for error messages)."""
        if offset > _LINE_COUNT_LIMIT:
            return None
        n = 0
        try:
            with _open_binary(self.path, self.index.compression) as f:
                left = offset
                while left > 0:
                    data = f.read(min(left, _CHUNK))
                    if not data:
                        break
                    n += data.count(b"\n")
                    left -= len(data)
        except DECOMPRESS_ERRORS:
            return None
        return n + 1

    def read(self, i: int) -> DumpFrame:
        """Read frame ``i`` (0-based, negative counts from the end).

        Raises
        ------
        TrajectoryError
            naming file, frame and (where possible) line, for any malformed or implausible frame.
        """
        idx = self.index
        n = idx.n_frames
        if not -n <= i < n:
            raise IndexError(f"{self.path}: frame {i} out of range ({n} frames)")
        i = int(i) % n
        path = self.path
        if i in idx.errors:
            first = self.line_number(int(idx.frame_start[i]))
            line = None if first is None else first + idx.error_lines.get(i, 0)
            raise _error(path, idx.errors[i], i, line)
        f0, a0, a1 = int(idx.frame_start[i]), int(idx.atoms_start[i]), int(idx.atoms_end[i])
        data = self._bytes(f0, a1, i)
        try:
            hdr = _parse_header(data[: a0 - f0].decode("latin-1"))
        except ValueError as exc:
            first = self.line_number(f0)
            raise _error(path, str(exc), i, None if first is None else first + getattr(exc, "line", 0)) from None
        block = memoryview(data)[a0 - f0 :]

        # --- box
        cell, origin = lammps_box_to_cell(hdr.bounds, hdr.box_kind)
        if not np.all(np.isfinite(cell)) or not np.all(np.isfinite(origin)):
            raise _error(path, "box bounds are not finite", i)
        if hdr.box_kind != "general" and np.any(np.diag(cell) <= 0):
            raise _error(path, f"zero-volume or inverted box (edge lengths {np.round(np.diag(cell), 6).tolist()})", i)
        volume = float(np.linalg.det(cell))
        if not volume > 1e-12 * max(1.0, float(np.prod(np.linalg.norm(cell, axis=1)))):
            raise _error(path, f"zero-volume box (volume {volume:.6g})", i)

        # --- columns
        columns = hdr.columns
        conv = self.coordinates
        if conv == "auto":
            conv = next((c for c, cols in COORDINATE_COLUMNS.items() if all(x in columns for x in cols)), None)
        if conv is None or not all(x in columns for x in COORDINATE_COLUMNS[conv]):
            want = (
                "x y z, xs ys zs, xu yu zu or xsu ysu zsu"
                if self.coordinates == "auto"
                else " ".join(COORDINATE_COLUMNS[self.coordinates])
            )
            raise _error(
                path,
                f"no coordinate columns {want} in 'ITEM: ATOMS {' '.join(columns)}'",
                i,
                self.line_number(a0 - 1),
            )
        xyz_cols = COORDINATE_COLUMNS[conv]
        wanted: dict[str, pa.DataType] = {}
        if "id" in columns:
            wanted["id"] = pa.int64()
        if "type" in columns:
            wanted["type"] = pa.int32()
        if ELEMENT_COLUMN in columns:
            wanted[ELEMENT_COLUMN] = pa.string()
        for c in xyz_cols:
            wanted[c] = pa.float64()
        # pyarrow needs the names of the needed columns unique; a duplicated needed column is ambiguous
        dup = [c for c in wanted if columns.count(c) > 1]
        if dup:
            raise _error(path, f"column {dup[0]!r} appears twice in 'ITEM: ATOMS {' '.join(columns)}'", i)

        # --- parse: pyarrow on single-space separated lines; normalise whitespace and retry otherwise
        table = None
        if hdr.n_atoms == 0:
            raise _error(path, "frame has no atoms", i)
        head = bytes(block[:4096])
        nl = head.find(b"\n")
        first = head[:nl] if nl >= 0 else head
        if first.endswith(b"\r"):
            first = first[:-1]
        simple = not (first.startswith(b" ") or b"  " in first or b"\t" in first or b"\r" in first)
        if simple:
            try:
                table = _arrow_table(block, columns, wanted, first.endswith(b" "))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table = None
        if table is None:
            norm = _WS_EDGE.sub(b"", _WS_RUN.sub(b" ", bytes(block)))
            try:
                table = _arrow_table(norm, columns, wanted, False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                found = _diagnose(norm, columns, wanted, hdr.n_atoms)
                if found is None:
                    msg = " ".join(str(exc).split())
                    raise _error(path, f"cannot parse atom lines ({msg[:200]})", i) from None
                k, msg = found
                line = None
                if k is not None:
                    start_line = self.line_number(a0)
                    line = None if start_line is None else start_line + k
                raise _error(path, msg, i, line) from None
        if table.num_rows != hdr.n_atoms:
            found = _diagnose(bytes(block), columns, wanted, hdr.n_atoms)
            msg = found[1] if found else f"atom block has {table.num_rows} atom lines, header says {hdr.n_atoms}"
            raise _error(path, msg, i)

        cols = [np.asarray(table.column(c).to_numpy(), dtype=np.float64) for c in xyz_cols]
        ids = table.column("id").to_numpy().astype(np.int64, copy=False) if "id" in wanted else None
        types = table.column("type").to_numpy().astype(np.int32, copy=False) if "type" in wanted else None
        elements = _strings(table.column(ELEMENT_COLUMN)) if ELEMENT_COLUMN in wanted else None
        del table
        return self._finish(i, hdr, conv, cols, ids, types, cell, origin, a0, elements)

    def _finish(self, i, hdr, conv, cols, ids, types, cell, origin, a0, elements=None) -> DumpFrame:
        """Validate parsed columns (file order), convert to Cartesian, sort by id."""
        path = self.path
        n_at = len(cols[0])

        def line_of(row: int) -> int | None:
            start = self.line_number(a0)
            return None if start is None else start + int(row)

        def id_of(row: int) -> str:
            return f"atom id {ids[row]}" if ids is not None else f"atom {row + 1}"

        for c in cols:
            if not np.isfinite(c).all():
                row = int(np.flatnonzero(~np.isfinite(c))[0])
                xyz = [float(cc[row]) for cc in cols]
                raise _error(path, f"{id_of(row)} has a non-finite coordinate {xyz}", i, line_of(row))

        lower = not (cell[0, 1] or cell[0, 2] or cell[1, 2])
        diagonal = lower and not (cell[1, 0] or cell[2, 0] or cell[2, 1])
        scaled = conv.startswith("scaled")
        frac = cols if scaled else None
        if conv in ("unscaled", "scaled"):  # wrapped conventions: atoms must lie (about) in the box
            if conv == "unscaled" and diagonal:  # no division needed: compare with origin - L, origin + 2 L
                lengths = np.diag(cell)
                inside = all(
                    float(c.min()) >= o - L and float(c.max()) <= o + 2.0 * L for c, o, L in zip(cols, origin, lengths)
                )
            else:
                if frac is None:
                    frac = _to_fractional(cols, cell, origin, lower)
                inside = min(float(f.min()) for f in frac) >= -1.0 and max(float(f.max()) for f in frac) <= 2.0
            if not inside:
                if frac is None:
                    frac = _to_fractional(cols, cell, origin, lower)
                far = np.zeros(n_at, dtype=bool)
                for f in frac:
                    far |= (f < -1.0) | (f > 2.0)
                row = int(np.flatnonzero(far)[0])
                fr = np.array([float(f[row]) for f in frac])
                dist = float(np.max(np.maximum(-fr, fr - 1.0)))
                xyz = [round(float(c[row]), 6) for c in cols]
                raise _error(
                    path,
                    f"{id_of(row)} at {xyz} lies {dist:.3g} box lengths outside the box (more than one box length)",
                    i,
                    line_of(row),
                )
        if scaled:
            cols = _to_cartesian(cols, cell, origin, lower)
        pos = np.empty((n_at, 3), dtype=np.float64)
        for j, c in enumerate(cols):
            pos[:, j] = c
        del cols, frac

        if ids is None:
            ids = np.arange(1, n_at + 1, dtype=np.int64)
        elif n_at > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            got = _id_order(ids)
            if got is None:
                sids = np.sort(ids)
                same = np.flatnonzero(sids[1:] == sids[:-1])
                dup = int(sids[same[0]])
                rows = np.flatnonzero(ids == dup)
                raise _error(
                    path,
                    f"duplicate atom id {dup} (atom lines {rows[0] + 1} and {rows[1] + 1} of the frame; "
                    f"{len(same)} duplicate(s) in all)",
                    i,
                    line_of(rows[1]),
                )
            order, ids = got
            pos = np.take(pos, order, axis=0)
            if types is not None:
                types = np.take(types, order)
            if elements is not None:
                elements = np.take(elements, order)
        if types is None:  # no type column: atoms typed by element name where there is one
            types = np.ones(n_at, dtype=np.int32) if elements is None else elements.astype(object)

        time = hdr.time
        length_f, time_f = UNIT_FACTORS.get(self.index.units or "metal", (1.0, 1.0))
        if length_f != 1.0:
            pos *= length_f
            cell = cell * length_f
            origin = origin * length_f
        if time is not None:
            time *= time_f
        return DumpFrame(step=hdr.step, time=time, positions=pos, cell=cell, origin=origin, ids=ids, types=types,
                         elements=elements, pbc=hdr.pbc)


def _to_fractional(cols: list[np.ndarray], cell: np.ndarray, origin: np.ndarray, lower: bool) -> list[np.ndarray]:
    """Fractional coordinates of Cartesian columns x, y, z (cell rows = lattice vectors)."""
    x, y, z = cols
    if lower:  # r - o = fx a + fy b + fz c, a = (ax,0,0), b = (bx,by,0), c = (cx,cy,cz): back-substitute
        fz = z - origin[2]
        fz /= cell[2, 2]
        fy = y - origin[1]
        fy -= fz * cell[2, 1]
        fy /= cell[1, 1]
        fx = x - origin[0]
        fx -= fy * cell[1, 0]
        fx -= fz * cell[2, 0]
        fx /= cell[0, 0]
        return [fx, fy, fz]
    f = (np.column_stack(cols) - origin) @ np.linalg.inv(cell)
    return [np.ascontiguousarray(f[:, j]) for j in range(3)]


def _to_cartesian(frac: list[np.ndarray], cell: np.ndarray, origin: np.ndarray, lower: bool) -> list[np.ndarray]:
    """Cartesian columns ``origin + frac @ cell``."""
    fx, fy, fz = frac
    if lower:
        x = origin[0] + fx * cell[0, 0] + fy * cell[1, 0] + fz * cell[2, 0]
        y = origin[1] + fy * cell[1, 1] + fz * cell[2, 1]
        z = origin[2] + fz * cell[2, 2]
        return [x, y, z]
    r = origin + np.column_stack(frac) @ cell
    return [np.ascontiguousarray(r[:, j]) for j in range(3)]


def _id_order(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(permutation sorting ``ids``, sorted ids); None if an id occurs twice.

    Ids spanning at most 4 N consecutive values (the usual case) are ordered through a dense slot table
    in O(N + span); others by a sort.
    """
    n = len(ids)
    lo, hi = int(ids.min()), int(ids.max())
    span = hi - lo + 1
    if span < n:
        return None
    if span <= 4 * n:
        slot = np.full(span, -1, dtype=np.intp)
        slot[ids - lo] = np.arange(n, dtype=np.intp)
        if span == n:
            return (slot, np.arange(lo, hi + 1, dtype=np.int64)) if bool(slot.min() >= 0) else None
        filled = slot >= 0
        order = slot[filled]
        return (order, np.flatnonzero(filled).astype(np.int64) + lo) if len(order) == n else None
    order = np.argsort(ids)
    sids = ids[order]
    return None if bool(np.any(sids[1:] == sids[:-1])) else (order, sids)


# ------------------------------------------------------------------------------------------------
# MDAnalysis integration


def _set_box_and_positions(ts, cell: np.ndarray, positions: np.ndarray, origin: np.ndarray) -> None:
    """Set ``ts.dimensions`` and ``ts.positions`` (float32, relative to the origin, rotated with the cell where it is
    not lower-triangular, as MDAnalysis' cells are); a Timestep made without positions stays without."""
    dims = triclinic_box(*cell)
    ts.dimensions = dims
    if not ts.has_positions:
        return
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12 * float(np.abs(cell).max()):
        canonical = triclinic_vectors(dims).astype(np.float64)
        ts.positions = (positions - origin) @ np.linalg.solve(cell, canonical)
    else:
        np.subtract(positions, origin, out=ts.positions, casting="same_kind")  # one pass, no float64 temporary


class TrajdenDumpReader(ReaderBase):
    """MDAnalysis reader for LAMMPS text dumps backed by :class:`LammpsDump` (format ``"TRAJDEN_LAMMPSDUMP"``).

    Like MDAnalysis' ``LAMMPSDUMP`` reader, positions are sorted by atom id and translated so that the box
    origin is at zero. ``ts.data`` holds the frame as the file gives it (keys
    :data:`trajden.io.base.TS_DATA_KEYS`): ``step``, ``time`` (ps), ``absolute_positions`` ((N, 3) float64 in
    the file's frame), ``cell`` (rows), ``origin``, ``pbc``, ``ids``, ``types``, ``elements`` (None without an
    ``element`` column). :class:`trajden.io.readers.Trajectory` reads dumps through this reader.

    Parameters
    ----------
    filename : str
        LAMMPS dump (``.gz``, ``.bz2``, ``.xz`` allowed).
    coordinates : str
        See :class:`LammpsDump`.
    timestep_ps : float
        ps per MD step, for the time of frames without ``ITEM: TIME`` (default 0.001, metal units).
    index : DumpIndex, optional
        The file's index where it is built already (e.g. shipped to a worker); built on opening otherwise.
    initial_frame : int
        The frame read into ``ts`` on opening (0, as any MDAnalysis reader does; a reader opened for
        random access opens at the frame it wants first, so that opening parses no other frame).
    """

    format = MDA_FORMAT
    units = {"time": "ps", "length": "Angstrom"}

    @store_init_arguments
    def __init__(self, filename, coordinates: str = "auto", timestep_ps: float = 0.001, index: DumpIndex | None = None,
                 initial_frame: int = 0, **kwargs):
        super().__init__(filename, **kwargs)
        self._dump = LammpsDump(self.filename, coordinates=coordinates, index=index)
        self._timestep_ps = float(timestep_ps)
        self.n_atoms = self._dump.n_atoms
        self.n_frames = self._dump.n_frames
        if self.n_atoms < 0:  # frame 0's header is unreadable, so is the file: raise what the index found
            self._dump.read(0)
        self.ts = self._Timestep(self.n_atoms, **self._ts_kwargs)
        if "dt" not in self._ts_kwargs and self.n_frames > 1:
            idx = self._dump.index
            t = np.where(np.isnan(idx.times[:2]), idx.steps[:2] * self._timestep_ps, idx.times[:2])
            self.ts.data["dt"] = float(t[1] - t[0])
        self._read_frame(self._apply_limits(initial_frame))

    @classmethod
    def parse_n_atoms(cls, filename, **kwargs) -> int:
        return LammpsDump(filename).n_atoms

    @property
    def warnings(self) -> list[str]:
        return self._dump.warnings

    def _reopen(self):
        self.ts.frame = -1

    def close(self):
        pass

    def _read_next_timestep(self, ts=None):
        nxt = self.ts.frame + 1
        if nxt >= self.n_frames:
            raise EOFError
        return self._read_frame(nxt, ts)

    def _read_frame(self, frame, ts=None):
        ts = self.ts if ts is None else ts
        fr = self._dump.read(frame)
        if len(fr.positions) != self.n_atoms:
            raise _error(self.filename, f"atom count {len(fr.positions)} differs from {self.n_atoms}", frame)
        ts.frame = frame
        _set_box_and_positions(ts, fr.cell, fr.positions, fr.origin)
        time = fr.time if fr.time is not None and math.isfinite(fr.time) else fr.step * self._timestep_ps
        ts.data.update(step=fr.step, time=time, absolute_positions=fr.positions, cell=fr.cell, origin=fr.origin,
                       pbc=fr.pbc, ids=fr.ids, types=fr.types, elements=fr.elements)
        return ts

    def read_timestep(self, frame: int, positions: bool = True):
        """Frame ``frame`` (negative counts from the end) in a new Timestep, leaving the reader's ``ts`` alone.

        Several threads may share one reader this way; transformations and auxiliary data are not applied.
        With ``positions=False`` the Timestep has no ``positions`` (``ts.has_positions`` is False), only
        ``ts.data["absolute_positions"]``, which saves their float32 copy (what :class:`~trajden.io.readers.Trajectory`
        reads).

        Raises
        ------
        TrajectoryError
            the frame is unreadable (naming file, frame and, where known, line).
        IndexError
            ``frame`` out of range.
        """
        ts = self._Timestep(self.n_atoms, positions=positions, **self._ts_kwargs)
        if "dt" in self.ts.data:
            ts.data["dt"] = self.ts.data["dt"]
        return self._read_frame(self._apply_limits(frame), ts)


class TrajdenDumpParser(TopologyReaderBase):
    """MDAnalysis topology parser for LAMMPS dumps (format ``"TRAJDEN_LAMMPSDUMP"``): ids and types of frame 0.

    Atom types are kept as strings (``"1"``, ``"2"``, ...), as MDAnalysis' own dump parser does; masses
    are 1.0; all atoms are one residue of one segment. A dump with an ``element`` column also gives the
    atoms' ``elements``.
    """

    format = MDA_FORMAT

    def parse(self, **kwargs):
        fr = LammpsDump(self.filename).read(0)
        n = len(fr.ids)
        attrs = [
            Atomids(fr.ids.copy()),
            Atomtypes(np.array([str(t) for t in fr.types], dtype=object)),
            Masses(np.ones(n)),
            Resids(np.array([1])),
            Resnums(np.array([1])),
            Segids(np.array(["SYSTEM"], dtype=object)),
        ]
        if fr.elements is not None:
            attrs.append(Elements(np.asarray(fr.elements, dtype=object)))
        return Topology(n, 1, 1, attrs=attrs, atom_resindex=np.zeros(n, dtype=np.intp))
