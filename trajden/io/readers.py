"""Format-independent trajectory access for the pipeline: :class:`Trajectory` -> :class:`Frame`.

Each file is read by the reader of its format (the contract: :mod:`trajden.io.base`):

* LAMMPS text dumps by :class:`~trajden.io.lammps_dump.TrajdenDumpReader`, the MDAnalysis reader over the
  fast parser :class:`~trajden.io.lammps_dump.LammpsDump`; the frame comes from its Timestep (``ts.data``);
* (extended) XYZ by ASE, with an offset index so that frame ``i`` is parsed without reading the frames before
  it: MDAnalysis' XYZ reader has no cell, no periodicity and none of extxyz's per-atom or per-frame
  properties (``Lattice=``, ``pbc=``, ``id``, ``type``, ``step=``), all of which a frame needs; formats only
  ASE reads (``.traj``, VASP, ...) by ASE too (:mod:`trajden.io.ase_reader`);
* every other format by MDAnalysis' own readers (XTC, TRR, DCD, ... need ``topology``).

Several files form one trajectory, frame indices continuing from file to file. A :class:`Trajectory`
holds no open file or Universe: it pickles as its arguments plus small indexes, and re-opens lazily
where it is unpickled (e.g. in a Dask worker). The dump readers and the MDAnalysis Universes are opened once
per process and file (:func:`_cached`), and shared by every Trajectory of that process: a Dask task, which
unpickles its own Trajectory, does not open them again.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from trajden.errors import InputError
from trajden.io import species as species_mod
from trajden.io.ase_reader import ASE, ASESource, is_ase_name
from trajden.io.base import DumpFrame, Frame, _error
from trajden.io.compression import DECOMPRESS_ERRORS, compression, open_binary, strip_suffix
from trajden.io.lammps_dump import DumpIndex, TrajdenDumpReader, TrajectoryError, build_index, is_lammps_dump

__all__ = ["Frame", "Trajectory", "TrajectoryError", "parse_frames", "resolve_format"]

#: default ps per MD step for LAMMPS dumps without ITEM: TIME (metal units)
DEFAULT_TIMESTEP_PS = 0.001

LAMMPSDUMP = "lammpsdump"
EXTXYZ = "extxyz"
_LAMMPS_ALIASES = {"lammpsdump", "lammps_dump", "lammpstrj", "dump", "lammps-dump", "trajden_lammpsdump"}
_XYZ_ALIASES = {"xyz", "extxyz"}
_LAMMPS_SUFFIXES = (".dump", ".lammpstrj", ".lammpsdump")
_XYZ_SUFFIXES = (".xyz", ".extxyz")


# ------------------------------------------------------------------------------------------------
# frame selection


def parse_frames(spec: str | None, n_frames: int) -> list[int]:
    """Frame indices selected by ``spec``: ``"START:STOP:STEP"`` with Python slice semantics, or one index.

    ``None``, ``""``, ``"all"`` and ``":"`` select every frame; negative numbers count from the end.

    Raises
    ------
    InputError
        (a ``ValueError``) on a malformed spec, a zero step, an index out of range or an empty selection.
    """
    if spec is None:
        return list(range(n_frames))
    text = str(spec).strip()
    if text in ("", "all", ":", "::"):
        return list(range(n_frames))
    parts = text.split(":")
    if len(parts) > 3:
        raise InputError(
            f"--frames {spec}: bad frame selection; expected START:STOP:STEP (e.g. '0:100:10') or one index"
        )
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise InputError(
            f"--frames {spec}: bad frame selection; START, STOP and STEP must be integers (e.g. '0:100:10', '-5:', '7')"
        ) from None
    if len(nums) == 1:
        i = nums[0]
        if not -n_frames <= i < n_frames:
            raise InputError(f"--frames {spec}: frame index out of range for {n_frames} frames")
        return [i % n_frames]
    if len(nums) == 3 and nums[2] == 0:
        raise InputError(f"--frames {spec}: bad frame selection; STEP must not be zero")
    out = list(range(n_frames))[slice(*nums)]
    if not out:
        raise InputError(f"--frames {spec}: selects no frames (the trajectory has {n_frames})")
    return out


# ------------------------------------------------------------------------------------------------
# format resolution


def resolve_format(path: str, format: str | None = None) -> str:
    """``"lammpsdump"``, ``"extxyz"``, ``"ASE"`` (``"ASE:<ase format>"``) or an MDAnalysis format name (upper
    case) for ``path``.

    Without ``format``: by suffix (``.dump``, ``.lammpstrj``, ``.xyz``, ``.extxyz``, with optional ``.gz``,
    ``.bz2`` or ``.xz``; ASE-only ones such as ``.traj``, ``POSCAR``: :mod:`trajden.io.ase_reader`),
    then by content (a file starting with ``ITEM:`` is a LAMMPS dump, e.g. ``dump.melt``), then
    MDAnalysis' guess from the extension.
    """
    if format is not None:
        f = str(format).strip()
        if f.lower() in _LAMMPS_ALIASES:
            return LAMMPSDUMP
        if f.lower() in _XYZ_ALIASES:
            return EXTXYZ
        if f.lower() == "ase" or f.lower().startswith("ase:"):  # ase:<ase format> keeps ASE's spelling
            return ASE + f[3:]
        return f.upper()
    base = strip_suffix(path).lower()
    if base.endswith(_LAMMPS_SUFFIXES):
        return LAMMPSDUMP
    if base.endswith(_XYZ_SUFFIXES):
        return EXTXYZ
    if is_ase_name(strip_suffix(path)):
        return ASE
    if os.path.isfile(path) and is_lammps_dump(path):
        return LAMMPSDUMP
    from MDAnalysis import _PARSERS, _READERS
    from MDAnalysis.lib.util import guess_format

    try:
        fmt = guess_format(path).upper()
    except (ValueError, TypeError):
        fmt = None
    if fmt is None or (fmt not in _READERS and fmt not in _PARSERS):
        raise _error(path, "cannot tell the file format from the name or the content; pass --format "
                     "(lammpsdump, extxyz or an MDAnalysis format)")
    return fmt


def _expand(paths: str | os.PathLike | list) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p) and any(ch in p for ch in "*?["):
            hits = sorted(glob.glob(p), key=_natural_key)
            if not hits:
                raise TrajectoryError(f"{p}: no file matches this pattern")
            out.extend(hits)
        else:
            out.append(p)
    if not out:
        raise TrajectoryError("no trajectory file given")
    return out


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ------------------------------------------------------------------------------------------------
# per-file sources: .n_frames, .n_atoms, .warnings, .read(i) -> DumpFrame, .state (picklable index)


#: dump readers and Universes opened in this process (see :func:`_cached`); few, as each holds a frame
_OPEN: OrderedDict = OrderedDict()
_OPEN_MAX = 4
_OPEN_LOCK = threading.Lock()


def _cached(key: tuple, make):
    """``(value, created)``: the value opened in this process for ``key``, or ``make()`` (then ``created`` True).

    Keeps the :data:`_OPEN_MAX` most recently used values. ``make`` runs under a lock, so that threads needing
    the same file wait for one opening rather than each opening it.
    """
    with _OPEN_LOCK:
        value = _OPEN.get(key)
        if value is not None:
            _OPEN.move_to_end(key)
            return value, False
        value = _OPEN[key] = make()
        while len(_OPEN) > _OPEN_MAX:
            _OPEN.popitem(last=False)
        return value, True


def _file_key(path: str | None) -> tuple:
    """The identity of a file's current version: absolute path, inode, size, modification time."""
    if path is None:
        return (None,)
    try:
        st = os.stat(path)
    except OSError:  # gone: the reader reports it when it reads
        return (os.path.abspath(path),)
    return os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns


class _DumpSource:
    """A LAMMPS dump, read through a :class:`TrajdenDumpReader` opened once per process (:func:`_cached`)."""

    def __init__(self, path: str, state: DumpIndex | None = None, timestep_ps: float = DEFAULT_TIMESTEP_PS):
        self.path = path
        self.state = build_index(path) if state is None else state
        self.timestep_ps = timestep_ps
        self.n_frames = self.state.n_frames
        self.n_atoms = int(self.state.n_atoms[0])
        self.warnings = list(self.state.warnings)
        self.steps = self.state.steps
        self.times = self.state.times
        self.elements_origin = species_mod.ORIGIN_COLUMN  # where a frame has elements, they are the file's

    def read(self, i: int) -> DumpFrame:
        key = ("dump", *_file_key(self.path), self.timestep_ps)
        reader, opened = _cached(key, lambda: TrajdenDumpReader(self.path, timestep_ps=self.timestep_ps,
                                                                index=self.state, initial_frame=i))
        # a reader opens at the frame asked for first; ts.data holds the frame, ts.positions (float32) is not needed
        ts = reader.ts if opened else reader.read_timestep(i, positions=False)
        d = ts.data
        return DumpFrame(step=d["step"], time=d["time"], positions=d["absolute_positions"], cell=d["cell"],
                         origin=d["origin"], ids=d["ids"], types=d["types"], elements=d["elements"], pbc=d["pbc"])


def _open_text(path: str):
    return open_binary(path, compression(path))


class _XYZSource:
    """(Extended) XYZ via ase, with an offset index so that frame i is parsed without re-reading the file."""

    def __init__(self, path: str, state: dict | None = None):
        self.path = path
        if not os.path.isfile(path):
            raise _error(path, "no such file")
        if state is None:
            state = self._index()
        self.state = state
        self.offsets = state["offsets"]
        self.n_frames = len(self.offsets)
        self.n_atoms = int(state["n_atoms"][0])
        self.warnings = list(state["warnings"])
        self.steps = None
        self.times = None
        self.elements_origin = species_mod.ORIGIN_SYMBOLS

    def _index(self) -> dict:
        path = self.path
        if os.path.getsize(path) == 0:
            raise _error(path, "file is empty")
        offsets, counts, warnings = [], [], []
        line_no = 0
        try:
            with _open_text(path) as f:
                while True:
                    off = f.tell()
                    line = f.readline()
                    line_no += 1
                    if not line:
                        break
                    if not line.strip():
                        continue
                    frame = len(offsets)
                    try:
                        n = int(line.split()[0])
                    except ValueError:
                        raise _error(
                            path, f"not an XYZ file: expected an atom count, found {line[:60]!r}", frame, line_no
                        ) from None
                    got = 0
                    last = prev = b"\n"
                    for _ in range(n + 1):
                        prev, last = last, f.readline()
                        if not last:
                            break
                        got += 1
                    line_no += got
                    # a file without a final newline: its last line counts if it is as wide as the one before
                    whole = last.endswith(b"\n") or len(last.split()) == (len(prev.split()) if n > 1 else 4)
                    if got < n + 1 or not whole:
                        warnings.append(
                            f"{path}: frame {frame}: incomplete last frame ({max(got - 1, 0)} of {n} atom lines); "
                            "dropped"
                        )
                        break
                    offsets.append(off)
                    counts.append(n)
        except DECOMPRESS_ERRORS as exc:
            raise _error(path, f"cannot read ({type(exc).__name__}: {exc})") from None
        if not offsets:
            raise _error(path, "no complete frame in file")
        return {
            "offsets": np.asarray(offsets, dtype=np.int64),
            "n_atoms": np.asarray(counts, dtype=np.int64),
            "warnings": warnings,
        }

    def read(self, i: int) -> DumpFrame:
        import ase.io

        path = self.path
        n = int(self.state["n_atoms"][i])
        with _open_text(path) as f:
            f.seek(int(self.offsets[i]))
            text = b"".join(f.readline() for _ in range(n + 2)).decode("utf-8", errors="replace")
        try:
            atoms = ase.io.read(io.StringIO(text), format="extxyz")
        except Exception as exc:  # ase raises many types on malformed input
            plain = _plain_xyz(text, n)  # e.g. names that are no element ("A", "CA"), as MDAnalysis reads them
            if plain is not None:
                return plain
            msg = " ".join(str(exc).split())[:200]
            raise _error(path, f"cannot parse frame ({type(exc).__name__}: {msg})", i) from None
        info = atoms.info
        ids = atoms.arrays.get("id")
        ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        types = atoms.arrays.get("type")
        symbols = np.array(atoms.get_chemical_symbols(), dtype=str)
        if types is None:
            types = symbols.astype(object)
        elements = None if bool(np.all(atoms.numbers == 0)) else symbols  # "X": ase's symbol for none
        step = info.get("step", info.get("timestep"))
        time = info.get("time")
        cell = np.array(atoms.cell.array, dtype=np.float64) if atoms.cell.rank == 3 else np.zeros((3, 3))
        origin = np.asarray(info.get("origin", np.zeros(3)), dtype=np.float64).reshape(3)
        return DumpFrame(
            step=None if step is None else int(step),
            time=None if time is None else float(time),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=cell,
            origin=origin,
            ids=ids,
            types=types,
            elements=elements,
        )


def _plain_xyz(text: str, n: int) -> DumpFrame | None:
    """A plain XYZ frame (count, comment, ``name x y z`` lines; no cell) as MDAnalysis' XYZ reader reads it,
    for frames ase's extxyz reader refuses; None unless every atom line has a name and three numbers."""
    lines = text.splitlines()[2 : 2 + n]
    if len(lines) != n:
        return None
    try:
        fields = [ln.split() for ln in lines]
        positions = np.array([[float(v) for v in f[1:4]] for f in fields], dtype=np.float64)
    except (ValueError, IndexError):
        return None
    if positions.shape != (n, 3):
        return None
    return DumpFrame(step=None, time=None, positions=positions, cell=np.zeros((3, 3)), origin=np.zeros(3),
                     ids=np.arange(1, n + 1, dtype=np.int64), types=np.array([f[0] for f in fields], dtype=object))


#: ``--atom-style`` names -> MDAnalysis' ``atom_style`` strings (the Atoms section columns of a LAMMPS data file)
ATOM_STYLES = {
    "atomic": "id type x y z",
    "charge": "id type q x y z",
    "molecular": "id resid type x y z",
    "full": "id resid type q x y z",
}


def mda_atom_style(atom_style: str | None) -> str | None:
    """MDAnalysis' ``atom_style`` for a LAMMPS style name (atomic, charge, molecular, full) or a column list.

    A column list (e.g. ``"id type q x y z"``) is passed through; MDAnalysis checks it.
    """
    if atom_style is None:
        return None
    text = " ".join(str(atom_style).split())
    if text.lower() in ATOM_STYLES:
        return ATOM_STYLES[text.lower()]
    if len(text.split()) < 5:
        raise InputError(f"--atom-style {atom_style}: expected one of {', '.join(ATOM_STYLES)} or the Atoms "
                         "columns, e.g. 'id type x y z'")
    return text


def _data_hint(path: str) -> str:
    """What the '# style' comment of a LAMMPS data file's Atoms line suggests, for an error message."""
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.lstrip().startswith(b"Atoms"):
                    style = raw.partition(b"#")[2].decode("latin-1").strip()
                    if style:
                        return f"the Atoms section says '# {style}': pass --atom-style {style}"
                    break
    except OSError:
        pass
    return f"pass --atom-style ({', '.join(ATOM_STYLES)}) matching the Atoms section"


#: MDAnalysis formats that carry no atoms of their own and need ``topology``
_COORDINATE_ONLY = {"XTC", "TRR", "DCD", "NC", "NCDF", "TNG", "LAMMPS", "MDCRD", "TRJ", "INPCRD", "RESTRT", "TRZ"}


@dataclass
class _Universe:
    """A Universe opened by :class:`_MDASource`, with what it tells of the atoms, and its lock (a Universe is not
    safe to share between threads)."""

    universe: object
    elements: np.ndarray | None
    elements_origin: str | None
    warnings: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock)


class _MDASource:
    """Any MDAnalysis-readable format, read through MDAnalysis' readers.

    The Universe is built once per process (:func:`_cached`). The state (frame and atom counts, warnings) pickles
    with the :class:`Trajectory`, so that an unpickled one builds no Universe until it reads a frame.
    """

    def __init__(self, path: str, fmt: str, topology: str | None, state: dict | None = None,
                 atom_style: str | None = None):
        self.path, self.fmt, self.topology = path, fmt, topology
        self.atom_style = atom_style
        if state is None:
            opened = self._opened()
            state = {"n_frames": len(opened.universe.trajectory), "n_atoms": len(opened.universe.atoms),
                     "elements_origin": opened.elements_origin, "warnings": opened.warnings}
        self.state = state
        self.n_frames, self.n_atoms = state["n_frames"], state["n_atoms"]
        self.elements_origin = state["elements_origin"]
        self.warnings = list(state["warnings"])
        self.steps = None
        self.times = None

    def _opened(self) -> _Universe:
        key = ("mda", *_file_key(self.path), self.fmt, *_file_key(self.topology), self.atom_style)
        return _cached(key, self._open)[0]

    def _open(self) -> _Universe:
        path, fmt, topology = self.path, self.fmt, self.topology
        if not os.path.isfile(path):
            raise _error(path, "no such file")
        if os.path.getsize(path) == 0:
            raise _error(path, "file is empty")
        from MDAnalysis import _PARSERS

        if topology is None and (fmt in _COORDINATE_ONLY or fmt not in _PARSERS):
            raise _error(
                path,
                f"format {fmt} holds no topology; pass --topology (e.g. a PDB, GRO or LAMMPS data file)",
            )
        if topology is not None and not os.path.isfile(topology):
            raise _error(topology, "no such topology file")
        u = self._universe()
        if len(u.trajectory) == 0:
            raise _error(path, "no frames in file")
        warnings: list[str] = []
        elements, origin = self._elements(u, warnings)
        return _Universe(u, elements, origin, warnings)

    def _elements(self, u, warnings: list[str]) -> tuple[np.ndarray | None, str | None]:
        """Per-atom elements of the topology (file order), or MDAnalysis' guess from the names (warned)."""
        import warnings as _w

        def valid(values) -> np.ndarray | None:
            got = [species_mod.normalise_symbol(v) for v in values]
            return None if any(g is None for g in got) else np.asarray(got, dtype=str)

        if hasattr(u.atoms, "elements"):
            got = valid(u.atoms.elements)
            if got is not None:
                return got, species_mod.ORIGIN_TOPOLOGY
        if _is_lammps_data(self.topology if self.topology is not None else self.path, self.fmt):
            return None, None  # its Masses name the types (Trajectory._type_map), not the atom names
        if not hasattr(u.atoms, "names"):
            return None, None
        try:
            with _w.catch_warnings():
                _w.simplefilter("ignore")
                from MDAnalysis.guesser.default_guesser import DefaultGuesser

                guessed = DefaultGuesser(u).guess_types(atom_types=u.atoms.names)
        except Exception:  # noqa: BLE001 - a failed guess is no guess
            return None, None
        got = valid(guessed)
        if got is None:
            return None, None
        warnings.append(f"{self.path}: no element in the topology; elements {sorted(set(got.tolist()))} "
                        "guessed from the atom names by MDAnalysis (pass --species to set them)")
        return got, species_mod.ORIGIN_NAMES

    def _universe(self):
        import warnings as _w

        import MDAnalysis as mda
        from MDAnalysis.lib.util import guess_format

        top = self.path if self.topology is None else self.topology
        try:
            top_fmt = self.fmt if self.topology is None else guess_format(top).upper()
        except (ValueError, TypeError):
            top_fmt = None
        kw = {}
        if top_fmt == "DATA" and self.atom_style is not None:
            kw["atom_style"] = mda_atom_style(self.atom_style)
        try:
            with _w.catch_warnings():
                _w.simplefilter("ignore")
                if self.topology is None:
                    u = mda.Universe(self.path, format=self.fmt, **kw)
                else:
                    u = mda.Universe(self.topology, self.path, format=self.fmt, **kw)
        except Exception as exc:  # MDAnalysis raises many types on unreadable input
            if top_fmt == "DATA" and "atom" in str(exc).lower() and "style" in str(exc).lower():
                given = "" if self.atom_style is None else f" with --atom-style {self.atom_style}"
                raise InputError(f"{top}: cannot parse the Atoms section of this LAMMPS data file{given}",
                                 hint=_data_hint(top)) from None
            msg = " ".join(str(exc).split())[:200]
            raise _error(
                self.path, f"MDAnalysis cannot open it as {self.fmt} ({type(exc).__name__}: {msg})"
            ) from None
        return u

    def read(self, i: int) -> DumpFrame:
        from MDAnalysis.lib.mdamath import triclinic_vectors

        opened = self._opened()
        u = opened.universe
        with opened.lock:
            try:
                ts = u.trajectory[i]
            except Exception as exc:  # MDAnalysis raises many types on unreadable input
                msg = " ".join(str(exc).split())[:200]
                raise _error(self.path, f"cannot read frame ({type(exc).__name__}: {msg})", i) from None
            dims = None if ts.dimensions is None else np.array(ts.dimensions, dtype=np.float64)
            positions = np.array(ts.positions, dtype=np.float64)
            step = ts.data.get("step")
            with warnings.catch_warnings():  # "Reader has no dt information": the time is then the frame number
                warnings.simplefilter("ignore")
                time = float(ts.time)
        if dims is None or not np.all(np.isfinite(dims)) or np.any(dims[:3] <= 0):
            cell = np.zeros((3, 3))
        else:
            cell = triclinic_vectors(dims).astype(np.float64)
        ids = getattr(u.atoms, "ids", None)
        ids = np.arange(1, self.n_atoms + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        types = getattr(u.atoms, "types", None)
        if types is None:
            types = np.ones(self.n_atoms, dtype=np.int32)
        return DumpFrame(
            elements=opened.elements,
            step=None if step is None else int(step),
            time=time,
            positions=positions,
            cell=cell,
            origin=np.zeros(3),
            ids=ids,
            types=np.asarray(types),
        )


def _is_lammps_data(path: str | None, fmt: str | None = None) -> bool:
    """True for a LAMMPS data file (MDAnalysis format DATA, by ``fmt`` or by the name)."""
    if path is None:
        return False
    if fmt is not None and fmt.upper() == "DATA":
        return True
    from MDAnalysis.lib.util import guess_format

    try:
        return guess_format(path).upper() == "DATA"
    except (ValueError, TypeError):
        return False


# ------------------------------------------------------------------------------------------------
# trajectory


def _ids_digest(ids: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).data, digest_size=16).hexdigest()


class Trajectory:
    """One trajectory from one or several files, with random access to :class:`Frame` s.

    Parameters
    ----------
    paths : str or list of str
        File(s), in order; a string with ``*`` / ``?`` that matches no file is a glob (natural sort).
    format : str, optional
        ``"lammpsdump"``, ``"extxyz"`` or an MDAnalysis format name; guessed per file when None.
    topology : str, optional
        Topology for MDAnalysis formats that have none (XTC, TRR, DCD, ...). A LAMMPS data file given here
        (for any format, a LAMMPS dump too) names the atom types' elements by its Masses.
    timestep_ps : float, optional
        ps per MD step, for frames without a time (default 0.001, LAMMPS metal units).
    species : str or sequence of str, optional
        Elements of atom types 1, 2, ... (``"Ni,Al"`` or ``["Ni", "Al"]``; the CLI's ``--species``). Where
        the file names the elements itself (element column, symbols), they must agree.
    atom_style : str, optional
        For a LAMMPS data file (as the trajectory or the topology): ``atomic``, ``charge``, ``molecular``,
        ``full`` or the Atoms columns, passed to MDAnalysis as ``atom_style`` (see :data:`ATOM_STYLES`).

    Attributes
    ----------
    n_frames, n_atoms, paths, warnings, species (the parsed ``species``), type_elements

    Notes
    -----
    Every frame must have the same atoms: the atom count is checked when files are opened, and the ids of
    every frame read are compared with those of frame 0 (a digest, read once per process unless known).
    The object pickles as ``(paths, format, topology, timestep_ps)`` plus the offset indexes already built
    and the frame-0 id digest; dump readers and Universes are (re)opened lazily where it is unpickled, once
    per process and file (an unpickled copy uses those its process has open).
    """

    def __init__(
        self,
        paths: str | list[str],
        format: str | None = None,
        topology: str | None = None,
        timestep_ps: float | None = None,
        species: str | list[str] | None = None,
        atom_style: str | None = None,
    ):
        self.species = species_mod.parse_species(species)
        self.paths = _expand(paths)
        self.atom_style = atom_style
        mda_atom_style(atom_style)  # checked before any file is opened
        self.format = format
        self.topology = None if topology is None else os.fspath(topology)
        self.timestep_ps = timestep_ps
        if timestep_ps is not None and not (np.isfinite(timestep_ps) and timestep_ps > 0):
            raise ValueError(f"timestep_ps must be a positive number, got {timestep_ps!r}")
        self._states: list = [None] * len(self.paths)
        self._reference: dict | None = None
        self._sources: list | None = None
        self._open()
        self._inferred, self._species_warnings = self._inferred_elements()

    # --- opening

    def _inferred_elements(self) -> tuple[dict[int, str], list[str]]:
        """Type -> element from a LAMMPS data file's masses (the topology, or the file itself), with warnings."""
        data = self.topology
        if data is None and _is_lammps_data(self.paths[0], getattr(self.sources[0], "fmt", None)):
            data = self.paths[0]
        if data is None or not _is_lammps_data(data):
            return {}, []
        found, warnings = species_mod.elements_from_lammps_data(data)
        if found:
            warnings.append(f"{data}: elements {', '.join(f'type {t} {e}' for t, e in sorted(found.items()))} "
                            "taken from the Masses (nearest standard atomic mass); pass --species to set them")
        if self.species is not None:
            differ = [f"type {t}: {e}" for t, e in sorted(found.items())
                      if t <= len(self.species) and self.species[t - 1] != e]
            if differ:
                warnings.append(f"{data}: --species {','.join(self.species)} overrides the elements of its "
                                f"Masses ({'; '.join(differ)})")
        return found, warnings

    def _open(self) -> None:
        sources = []
        for k, path in enumerate(self.paths):
            fmt = resolve_format(path, self.format) if os.path.exists(path) else None
            if fmt is None:
                raise _error(path, "no such file")
            if fmt == LAMMPSDUMP:
                dt = self.timestep_ps if self.timestep_ps is not None else DEFAULT_TIMESTEP_PS
                src = _DumpSource(path, self._states[k], dt)
            elif fmt == EXTXYZ:
                src = _XYZSource(path, self._states[k])
            elif fmt == ASE or fmt.startswith(ASE + ":"):
                src = ASESource(path, fmt, self._states[k])
            else:
                src = _MDASource(path, fmt, self.topology, self._states[k], atom_style=self.atom_style)
            self._states[k] = src.state
            sources.append(src)
        n0 = sources[0].n_atoms
        for src in sources[1:]:
            if src.n_atoms != n0:
                raise _error(src.path, f"atom count {src.n_atoms} differs from {n0} in {sources[0].path}", 0)
        self._sources = sources
        self._first = np.concatenate([[0], np.cumsum([s.n_frames for s in sources])]).astype(np.int64)

    @property
    def sources(self) -> list:
        if self._sources is None:
            self._open()
        return self._sources

    # --- sizes

    @property
    def n_frames(self) -> int:
        self.sources  # noqa: B018  (opens lazily after unpickling)
        return int(self._first[-1])

    @property
    def n_atoms(self) -> int:
        return int(self.sources[0].n_atoms)

    @property
    def warnings(self) -> list[str]:
        return [w for s in self.sources for w in s.warnings] + list(self._species_warnings)

    @property
    def type_elements(self) -> dict[int, str]:
        """{type: element} of frame 0 (the types whose element is known; empty if none is)."""
        return dict(self._reference_info()["type_elements"])

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.frame(i)

    def __repr__(self) -> str:
        files = self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} files"
        return f"<Trajectory {files}: {self.n_frames} frames of {self.n_atoms} atoms>"

    def locate(self, i: int) -> tuple[int, int]:
        """(file number, frame within that file) of global frame ``i``."""
        n = self.n_frames
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a trajectory of {n} frames")
        i = int(i) % n
        k = int(np.searchsorted(self._first, i, side="right")) - 1
        return k, i - int(self._first[k])

    # --- reading

    def _wrap(self, exc: TrajectoryError, i: int) -> TrajectoryError:
        """``exc`` naming the trajectory frame ``i`` too, where several files make the trajectory."""
        if len(self.paths) == 1:
            return exc
        return TrajectoryError(f"{exc} [trajectory frame {i}]")

    def _raw(self, i: int) -> tuple[DumpFrame, int, int]:
        k, local = self.locate(i)
        try:
            return self.sources[k].read(local), k, local
        except TrajectoryError as exc:
            raise self._wrap(exc, i) from None

    def _reference_info(self) -> dict:
        if self._reference is None:
            try:
                raw, _, _ = self._raw(0)
            except TrajectoryError as exc:
                raise TrajectoryError(f"cannot check atom ids against frame 0, which is unreadable: {exc}") from None
            self._set_reference(raw)
        return self._reference

    def _set_reference(self, raw: DumpFrame) -> None:
        types = raw.types
        names: list[str] = []
        if types.dtype == object or types.dtype.kind in "US":
            names = _type_names(types)
        ref = {"n_atoms": len(raw.ids), "ids": _ids_digest(raw.ids), "type_names": names}
        _, ref["type_elements"], ref["elements_origin"] = self._elements(self._types(raw.types, ref), raw.elements,
                                                                          0, 0)
        self._reference = ref

    def frame(self, i: int) -> Frame:
        """Frame ``i`` of the trajectory (global index over all files; negative counts from the end).

        Raises
        ------
        TrajectoryError
            the frame is unreadable, or its atoms differ from frame 0's (message names file and frame).
        IndexError
            ``i`` out of range.
        """
        raw, k, local = self._raw(i)
        i = int(i) % self.n_frames
        path = self.paths[k]
        if i == 0 and self._reference is None:
            self._set_reference(raw)
        ref = self._reference_info()
        n = len(raw.positions)
        if n != ref["n_atoms"]:
            exc = _error(path, f"atom count {n} differs from {ref['n_atoms']} in frame 0 of {self.paths[0]}", local)
            raise self._wrap(exc, i)
        order = None
        ids = np.asarray(raw.ids, dtype=np.int64)
        if n > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            dup = np.flatnonzero(ids[1:] == ids[:-1])
            if len(dup):
                exc = _error(path, f"duplicate atom id {ids[dup[0]]}", local)
                raise self._wrap(exc, i)
        if _ids_digest(ids) != ref["ids"]:
            exc = _error(path, f"atom ids differ from those of frame 0 of {self.paths[0]}", local)
            raise self._wrap(exc, i)
        positions = raw.positions if order is None else raw.positions[order]
        types = raw.types if order is None else raw.types[order]
        types = self._types(types, ref)
        elements = raw.elements if raw.elements is None or order is None else raw.elements[order]
        try:
            elements, type_elements, origin = self._elements(types, elements, k, local)
            before = ref.get("type_elements", {})
            changed = [t for t, e in type_elements.items() if before.get(t, e) != e]
            if changed:
                t = changed[0]
                raise species_mod.SpeciesError(f"{path}: frame {local}: atom type {t} is {type_elements[t]}, but "
                                               f"{before[t]} in frame 0 of {self.paths[0]}")
            uniq = np.unique(types)
            if elements is None and len(uniq) and uniq[0] >= 0 and all(int(t) in before for t in uniq):
                # e.g. a later file without the element column of the first: frame 0's types name them
                table = np.array([before.get(t, "") for t in range(int(uniq[-1]) + 1)], dtype=str)
                elements, origin = table[types], ref.get("elements_origin")
                type_elements = {int(t): before[int(t)] for t in uniq}
        except species_mod.SpeciesError as exc:
            raise self._wrap(exc, i) from None
        if not np.all(np.isfinite(positions)):
            exc = _error(path, "non-finite coordinates", local)
            raise self._wrap(exc, i)
        step = raw.step if raw.step is not None else i
        if raw.time is not None and np.isfinite(raw.time):
            time = float(raw.time)
        else:
            time = step * (self.timestep_ps if self.timestep_ps is not None else DEFAULT_TIMESTEP_PS)
        return Frame(
            index=i,
            step=int(step),
            time=time,
            positions=np.ascontiguousarray(positions, dtype=np.float64),
            cell=np.asarray(raw.cell, dtype=np.float64),
            origin=np.asarray(raw.origin, dtype=np.float64),
            ids=ids,
            types=types,
            source=path,
            elements=elements,
            type_elements=type_elements,
            elements_origin=origin,
            pbc=np.array(raw.pbc if np.any(raw.cell) else (False, False, False), dtype=bool),
        )

    def _elements(self, types: np.ndarray, found: np.ndarray | None, k: int, local: int
                  ) -> tuple[np.ndarray | None, dict[int, str], str | None]:
        """(per-atom elements or None, {type: element}, origin) of a frame of file ``k`` (see :mod:`species`)."""
        path = self.paths[k]
        origin = getattr(self.sources[k], "elements_origin", None) if found is not None else None
        flag = self.species
        where = f"{path}: frame {local}"
        bad = []
        if found is not None and (flag is None or origin in species_mod.AUTHORITATIVE):
            words, codes = np.unique(np.asarray(found).astype(str), return_inverse=True)
            symbols = [species_mod.normalise_symbol(w) for w in words]
            bad = [str(w) for w, sym in zip(words, symbols) if sym is None]
            if bad:
                # names that are no element (LAMMPS' 'X' placeholder, a force-field label): the frame is read as
                # MDAnalysis reads it, its elements unknown; processing then asks for --species if it needs them
                note = (f"{path}: the {origin} holds names that are no element symbol ({', '.join(bad[:3])}): "
                        "elements unknown, pass --species to name them")
                if note not in self._species_warnings:
                    self._species_warnings.append(note)
                found = None
        if found is not None and (flag is None or origin in species_mod.AUTHORITATIVE):
            elements = np.asarray(symbols, dtype=str)[codes.ravel()]
            tmap = species_mod.type_element_map(types, elements, where)
            if flag is not None:
                for t, e in sorted(tmap.items()):
                    said = flag[t - 1] if 1 <= t <= len(flag) else None
                    if said != e:
                        raise species_mod.SpeciesError(
                            f"{where}: --species {','.join(flag)} makes type {t} "
                            f"{said or 'nothing (too few names)'}, but the file's {origin} says {e}; "
                            "drop --species or correct it")
            return elements, tmap, origin
        uniq = [int(t) for t in np.unique(types)]
        if flag is not None:
            outside = [t for t in uniq if not 1 <= t <= len(flag)]
            if outside:
                raise species_mod.SpeciesError(
                    f"{where}: --species {','.join(flag)} names {len(flag)} element(s) for types 1..{len(flag)}, "
                    f"but the file has atom type {outside[-1]}; give one element per type")
            return np.asarray(flag, dtype=str)[types - 1], {t: flag[t - 1] for t in uniq}, species_mod.ORIGIN_FLAG
        tmap = {t: self._inferred[t] for t in uniq if t in self._inferred}
        if tmap and len(tmap) == len(uniq):
            table = np.array([tmap.get(t, "") for t in range(max(uniq) + 1)], dtype=str)
            return table[types], tmap, species_mod.ORIGIN_MASSES
        return None, tmap, None

    def _types(self, types: np.ndarray, ref: dict) -> np.ndarray:
        if types.dtype.kind in "iu":
            return types.astype(np.int32, copy=False)
        strs = np.asarray(types).astype(str)
        if all(s.lstrip("-").isdigit() for s in np.unique(strs)):
            return strs.astype(np.int32)
        table = {name: j + 1 for j, name in enumerate(ref["type_names"])}
        for name in _type_names(strs):  # names absent from frame 0: numbered after them, in order of appearance
            table.setdefault(name, len(table) + 1)
        uniq, inv = np.unique(strs, return_inverse=True)
        return np.array([table[u] for u in uniq], dtype=np.int32)[inv]

    # --- steps / times without reading frames (where the format's index has them)

    def frame_time_step(self, i: int) -> tuple[float, int]:
        """(time in ps, step) of frame ``i``, as :meth:`frame` gives them, without parsing its atoms.

        LAMMPS dumps answer from the offset index; other formats read the frame. A frame whose header is
        unreadable gives ``(nan, -1)`` here (reading it with :meth:`frame` raises the error).
        """
        k, local = self.locate(i)
        src = self.sources[k]
        i = int(i) % self.n_frames
        dt = self.timestep_ps if self.timestep_ps is not None else DEFAULT_TIMESTEP_PS
        if src.steps is not None:
            step = int(src.steps[local])
            if step < 0 and local in src.state.errors:
                return float("nan"), -1
            t = float(src.times[local])
            return (t if np.isfinite(t) else step * dt), step
        try:
            raw = src.read(local)
        except TrajectoryError:
            return float("nan"), -1
        step = raw.step if raw.step is not None else i
        time = float(raw.time) if raw.time is not None and np.isfinite(raw.time) else step * dt
        return time, int(step)

    @property
    def steps(self) -> np.ndarray | None:
        """(n_frames,) int64 MD timesteps from the index, or None if some file needs reading for them."""
        parts = [s.steps for s in self.sources]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    @property
    def times(self) -> np.ndarray | None:
        """(n_frames,) float64 times in ps from the index (as :meth:`frame` computes them), or None."""
        steps = self.steps
        parts = [s.times for s in self.sources]
        if steps is None or any(p is None for p in parts):
            return None
        times = np.concatenate(parts)
        dt = self.timestep_ps if self.timestep_ps is not None else DEFAULT_TIMESTEP_PS
        return np.where(np.isfinite(times), times, steps * dt)

    # --- pickling

    def __getstate__(self) -> dict:
        return {
            "paths": self.paths,
            "format": self.format,
            "topology": self.topology,
            "timestep_ps": self.timestep_ps,
            "atom_style": self.atom_style,
            "indexes": list(self._states),
            "reference": self._reference,
            "species": self.species,
            "inferred": (self._inferred, self._species_warnings),
        }

    def __setstate__(self, state: dict) -> None:
        self.paths = state["paths"]
        self.format = state["format"]
        self.topology = state["topology"]
        self.timestep_ps = state["timestep_ps"]
        self.atom_style = state.get("atom_style")
        self._states = list(state.get("indexes") or [None] * len(self.paths))
        self._reference = state.get("reference")
        self.species = state.get("species")
        self._inferred, self._species_warnings = state.get("inferred", ({}, []))
        self._sources = None


def _type_names(types) -> list[str]:
    """Distinct names in order of first appearance."""
    strs = np.asarray(types).astype(str)
    uniq, first = np.unique(strs, return_index=True)
    return [str(u) for u in uniq[np.argsort(first)]]
