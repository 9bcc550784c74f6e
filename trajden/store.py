"""The output store: denoised coordinates and structure labels in a Zarr (format 3) / xarray layout.

Layout (all names from :mod:`trajden.names`; each variable's dims, dtype, fill value, CF attributes and the
condition under which a store has it are declared once in :mod:`trajden.schema`), readable with
``xarray.open_zarr(path, consolidated=False)``:

* dims ``frame``, ``atom``, ``spatial`` (3), ``cell_vector`` (3), and ``iteration`` (only with ``max_iterations``);
* coordinates ``time(frame)`` float64 [ps], ``step(frame)`` int64, ``atom_id(atom)`` int64 (listed in the
  root's CF ``coordinates`` attribute, so xarray turns them into coordinates);
* ``positions(frame, atom, spatial)`` float32 [angstrom], ``positions_raw`` (only with ``keep_raw``),
  ``structure_<classifier>[_raw](frame, atom)`` int8 (OVITO codes, CF ``flag_values``/``flag_meanings``),
  ``displacement(frame, atom)`` float32, ``cell(frame, cell_vector, spatial)`` float64, ``type(atom)`` int32,
  ``element(atom)`` int16 (atomic number, 0 = unknown; CF ``flag_values``/``flag_meanings`` = the symbols),
  ``iterations(frame)`` int16, ``residual(frame)`` float32, ``scale(frame)`` float32, ``status(frame)`` int8,
  ``complete(frame)`` bool; ``rms_history(frame, iteration)`` and ``mobile_fraction(frame)`` float32 only when
  created with ``max_iterations`` (stores written before ``mobile_fraction`` existed lack it and still open).

Fill values (what a never-written frame reads as): NaN for floats, -1 for the label arrays, ``iterations`` and
``status`` (so "not written" is never confused with label 0 = "other" or status 0 = "converged"), False for
``complete``.
The fill values are zarr metadata only: xarray does not mask them (int8 stays int8).

``time`` carries ``units = "ps"``, which xarray does not know as a time unit, so it stays float64 (it is not
decoded to timedelta, with or without ``decode_timedelta=True``).

Chunks: every frame-dimensioned array uses ``frames_per_chunk`` along ``frame`` and every atom-dimensioned array
``atoms_per_chunk`` along ``atom`` (so ``xarray.Dataset.chunks`` is consistent).  A writer owns whole frame
chunks and always writes all atoms, so parallel writers never touch the same chunk file (zarr writes each chunk
file atomically).  ``complete`` is written after all other variables of the frames, so an interrupted write
leaves the frames pending.

Root attributes: whatever the caller passes in ``attrs`` plus ``trajden_store_format``, ``run_config`` (a JSON
string, compared on resume), ``classifiers``, ``trajden_version`` (defaults to this package's version),
``species`` (JSON ``{"type": "element"}``) and ``species_source``.  Stores written before elements were
stored lack ``element``, ``species`` and ``species_source``; they open and resume as before.
Attribute values that are dicts, or lists holding anything but numbers, are stored as JSON strings (netCDF-safe);
``Store.run_config`` decodes the run config.

The run lock is a directory ``.trajden_lock`` inside the store (see :mod:`trajden.run_lock`).

Only local (POSIX) filesystem paths are supported.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trajden import __version__, names, schema
from trajden.errors import StoreError
from trajden.run_lock import (
    RunLock,
    StaleLockWarning,
    _lock_is_stale,
    _lock_message,
    _read_lock,
    _read_zarr_json,
)
from trajden.schema import LABEL_FILL

__all__ = ["FrameResult", "Store", "StoreError", "StaleLockWarning", "is_trajden_store", "STORE_FORMAT"]

#: layout version written to ``trajden_store_format``
STORE_FORMAT = 1
#: default (and maximum default) atoms per chunk
MAX_ATOMS_PER_CHUNK = 1_048_576


@dataclass
class FrameResult:
    """What one frame's task produces.

    For a failed frame (``status == names.FRAME_STATUS_FAILED``) the arrays may be None (they are stored as fill
    values); see :meth:`failed`.  ``positions_raw`` is only stored when the store keeps raw positions.
    """

    index: int
    positions: np.ndarray | None  # (N, 3) float32
    displacement: np.ndarray | None  # (N,) float32
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # store variable name -> (N,) int8
    cell: np.ndarray | None = None  # (3, 3) float64
    iterations: int | None = None
    residual: float | None = None
    scale: float | None = None
    status: int = names.FRAME_STATUS_OK
    positions_raw: np.ndarray | None = None
    rms_history: np.ndarray | None = None  # (<= max_iterations,) RMS update per iteration; stored if the store has it
    evaluator: int | None = None  # names.EVALUATOR_* (how the model ran); stored if the store has it
    scope: np.ndarray | None = None  # (N,) int8 names.SCOPE_* per atom (0 denoised); stored if the store has it
    mobile_fraction: float | None = None  # atoms still moving when denoising stopped; stored if the store has it
    origin: np.ndarray | None = None  # (3,) float64, the cell's corner; stored if the store has it
    pbc: np.ndarray | None = None  # (3,) bool, periodic along each cell vector; stored if the store has it

    @classmethod
    def failed(cls, index: int, cell: np.ndarray | None = None, status: int = names.FRAME_STATUS_FAILED
               ) -> FrameResult:
        """A result recording only that frame ``index`` failed (``status``: one of FRAME_STATUS_NO_RESULT)."""
        return cls(index=index, positions=None, displacement=None, labels={}, cell=cell, status=status)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def is_trajden_store(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory holding a zarr group written by :class:`Store`."""
    path = Path(path)
    if not path.is_dir():
        return False
    meta = _read_zarr_json(path)
    if meta is None or meta.get("node_type") != "group":
        return False
    attrs = meta.get("attributes") or {}
    return names.ATTR_STORE_FORMAT in attrs


def _canonical_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serializable: {exc}") from None


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python objects, recursively."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _encode_attr(key: str, value: Any) -> Any:
    """Store-able attribute value: scalars, strings and lists of numbers as they are, the rest as JSON."""
    value = _plain(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return value
    return _canonical_json(value, f"attribute {key!r}")


def _describe(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dict_diff(stored: Any, wanted: Any, prefix: str) -> list[str]:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out: list[str] = []
        for key in sorted(set(stored) | set(wanted)):
            sub = f"{prefix}.{key}"
            if key not in stored:
                out.append(f"{sub} not in the store (now {_describe(wanted[key])})")
            elif key not in wanted:
                out.append(f"{sub} only in the store ({_describe(stored[key])})")
            else:
                out.extend(_dict_diff(stored[key], wanted[key], sub))
        return out
    if stored != wanted:
        return [f"{prefix}: stored {_describe(stored)}, now {_describe(wanted)}"]
    return []


def _atomic_numbers(elements: Any, n_atoms: int, path: Any) -> np.ndarray:
    """(n_atoms,) int16 atomic numbers of element symbols (None or "": 0 = unknown); StoreError otherwise."""
    if elements is None:
        return np.full(n_atoms, names.ELEMENT_UNKNOWN, dtype=np.int16)
    from ase.data import atomic_numbers

    strs = np.asarray(elements).astype(str)
    if strs.shape != (n_atoms,):
        raise StoreError(f"{path}: elements has shape {strs.shape}, expected ({n_atoms},)")
    uniq, inv = np.unique(strs, return_inverse=True)
    bad = [u for u in uniq if u and (u not in atomic_numbers or atomic_numbers[u] == 0)]
    if bad:
        raise StoreError(f"{path}: {bad[0]!r} is not an element symbol")
    codes = np.array([atomic_numbers[u] if u else names.ELEMENT_UNKNOWN for u in uniq], dtype=np.int16)
    return codes[inv.ravel()]


def _element_attrs(numbers: np.ndarray) -> dict:
    """CF attributes of ``element(atom)``: the atomic numbers present and their symbols."""
    from ase.data import chemical_symbols

    present = sorted(int(z) for z in np.unique(numbers))
    meanings = {z: (names.ELEMENT_UNKNOWN_NAME if z == names.ELEMENT_UNKNOWN else chemical_symbols[z])
                for z in present}
    return schema.flag_attrs(meanings, present, "chemical element",
                             f"atomic number; {names.ELEMENT_UNKNOWN} = {names.ELEMENT_UNKNOWN_NAME} "
                             "(an input without element information)")


class _BlockPut:
    """Copies one frame's array into row ``k`` of a write block, checking its shape."""

    def __init__(self, out: dict[str, np.ndarray], k: int, where: str, required: bool):
        self.out, self.k, self.where, self.required = out, k, where, required

    def __call__(self, var: str, value: Any, shape: tuple, required: bool = True) -> None:
        if value is None:
            if required and self.required:
                raise StoreError(f"{self.where}: {var} is missing")
            return
        value = np.asarray(value)
        if value.shape != shape:
            raise StoreError(f"{self.where}: {var} has shape {value.shape}, expected {shape}")
        self.out[var][self.k] = value


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------


class Store:
    """A trajden output store (see the module docstring for the layout)."""

    def __init__(self, path: Path, group: Any, mode: str):  # use create / open / open_or_create
        self._path = path
        self._group = group
        self._mode = mode
        self._arrays: dict[str, Any] = {}
        complete = self._array(names.VAR_COMPLETE)
        self._n_frames = int(complete.shape[0])
        self._frames_per_chunk = int(complete.chunks[0])
        atom_id = self._array(names.COORD_ATOM_ID)
        self._n_atoms = int(atom_id.shape[0])
        self._atoms_per_chunk = int(atom_id.chunks[0])
        present = set(group.array_keys())
        self._classifiers = tuple(c for c in names.CLASSIFIERS if names.structure_var(c) in present)
        self._keep_raw = names.VAR_POSITIONS_RAW in present
        self._history_len = int(group[names.VAR_RMS_HISTORY].shape[1]) if names.VAR_RMS_HISTORY in present else 0
        self._extra_labels = tuple(v for v in names.EXTRA_LABEL_VARS if v in present)
        layout = schema.Layout(self._classifiers, self._keep_raw, self._extra_labels, self._history_len or None)
        # the schema's variables of this layout, less those older stores lack (e.g. evaluator, scope, element)
        self._variables = schema.variables(layout, present)
        self._variable_names = frozenset(v.name for v in self._variables)

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        n_frames: int,
        atom_ids: np.ndarray,
        types: np.ndarray,
        times: np.ndarray,
        steps: np.ndarray,
        classifiers: Sequence[str] = (names.ACNA, names.PTM),
        keep_raw: bool = False,
        attrs: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None,
        frames_per_chunk: int = 1,
        atoms_per_chunk: int | None = None,
        max_iterations: int | None = None,
        overwrite: bool = False,
        elements: np.ndarray | Sequence[str] | None = None,
        type_elements: Mapping[int, str] | None = None,
        species_source: str | None = None,
        extra_labels: Sequence[str] = (),
    ) -> Store:
        """Create the store: all metadata and coordinates; data arrays hold fill values, nothing is complete.

        An existing path is refused unless ``overwrite`` is set and it is a trajden store that no live run has
        locked (an empty directory is used as is).  With ``max_iterations`` the store also gets
        ``rms_history(frame, iteration)`` (float32, NaN after the last iteration).

        ``elements`` (per atom element symbols; None: unknown) become ``element(atom)``, the atomic numbers
        (0 = unknown) with CF ``flag_values``/``flag_meanings`` naming them; ``type_elements`` ({type:
        element}) and ``species_source`` become the root attributes ``species`` (JSON) and
        ``species_source``.

        ``extra_labels`` (names from :data:`trajden.names.EXTRA_LABEL_VARS`) adds PTM's chemical ordering and
        the sublattice PTM labels, after and before denoising.
        """
        import zarr

        path = Path(path)
        n_frames = int(n_frames)
        atom_ids = np.asarray(atom_ids)
        types = np.asarray(types)
        times = np.asarray(times, dtype=np.float64)
        steps = np.asarray(steps)
        classifiers = tuple(classifiers)
        extra_labels = tuple(extra_labels)
        if any(v not in names.EXTRA_LABEL_VARS for v in extra_labels):
            raise StoreError(f"{path}: extra label variables must be among {names.EXTRA_LABEL_VARS}, "
                             f"got {extra_labels}")
        if n_frames < 1:
            raise StoreError(f"{path}: n_frames must be >= 1, got {n_frames}")
        if atom_ids.ndim != 1 or atom_ids.size < 1 or not np.issubdtype(atom_ids.dtype, np.integer):
            raise StoreError(f"{path}: atom_ids must be a non-empty 1-D integer array, got {atom_ids.dtype} "
                             f"{atom_ids.shape}")
        n_atoms = int(atom_ids.size)
        if np.unique(atom_ids).size != n_atoms:
            raise StoreError(f"{path}: atom_ids are not unique")
        if types.shape != (n_atoms,):
            raise StoreError(f"{path}: types has shape {types.shape}, expected ({n_atoms},)")
        if times.shape != (n_frames,) or steps.shape != (n_frames,):
            raise StoreError(f"{path}: times {times.shape} and steps {steps.shape} must have shape ({n_frames},)")
        if not classifiers or any(c not in names.CLASSIFIERS for c in classifiers) or \
                len(set(classifiers)) != len(classifiers):
            raise StoreError(f"{path}: classifiers must be a non-empty subset of {names.CLASSIFIERS}, "
                             f"got {classifiers}")
        frames_per_chunk = int(frames_per_chunk)
        if frames_per_chunk < 1:
            raise StoreError(f"{path}: frames_per_chunk must be >= 1, got {frames_per_chunk}")
        atoms_per_chunk = min(n_atoms, MAX_ATOMS_PER_CHUNK) if atoms_per_chunk is None else int(atoms_per_chunk)
        if atoms_per_chunk < 1:
            raise StoreError(f"{path}: atoms_per_chunk must be >= 1, got {atoms_per_chunk}")
        if max_iterations is not None and int(max_iterations) < 1:
            raise StoreError(f"{path}: max_iterations must be >= 1, got {max_iterations}")
        run_config_json = _canonical_json(_plain(dict(run_config or {})), f"{path}: run_config")
        numbers = _atomic_numbers(elements, n_atoms, path)

        root_attrs: dict[str, Any] = {}
        for key, value in (attrs or {}).items():
            root_attrs[str(key)] = _encode_attr(str(key), value)
        if names.ATTR_VERSION not in root_attrs:
            root_attrs[names.ATTR_VERSION] = __version__
        root_attrs[names.ATTR_CLASSIFIERS] = _canonical_json(list(classifiers), "classifiers")
        root_attrs[names.ATTR_RUN_CONFIG] = run_config_json
        root_attrs[names.CF_COORDINATES] = " ".join((names.COORD_TIME, names.COORD_STEP, names.COORD_ATOM_ID))
        root_attrs[names.ATTR_SPECIES] = _canonical_json({str(int(t)): str(e) for t, e in
                                                          sorted((type_elements or {}).items())}, "type_elements")
        root_attrs[names.ATTR_SPECIES_SOURCE] = str(species_source or "")
        root_attrs[names.ATTR_STORE_FORMAT] = STORE_FORMAT

        cls._check_path(path, overwrite)
        # build the store beside its destination and move it into place when complete, so a run killed
        # while creating it leaves the destination as it was (at worst a hidden temporary sibling)
        final_path, path = path, path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:12]}")

        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        layout = schema.Layout(classifiers, bool(keep_raw), extra_labels,
                               int(max_iterations) if max_iterations is not None else None)
        sizes = schema.dim_sizes(n_frames, n_atoms, layout.max_iterations)
        chunks = schema.dim_sizes(frames_per_chunk, atoms_per_chunk, layout.max_iterations)
        # the variables written now; the per-frame ones hold fill values until write_frames
        values = {names.COORD_TIME: times, names.COORD_STEP: steps, names.COORD_ATOM_ID: atom_ids,
                  names.VAR_TYPE: types, names.VAR_ELEMENT: numbers}
        for var in schema.variables(layout):
            attributes = _element_attrs(numbers) if var.name == names.VAR_ELEMENT else dict(var.attrs)
            array = group.create_array(var.name, shape=var.shape(sizes), dtype=var.dtype, chunks=var.shape(chunks),
                                       fill_value=var.fill, dimension_names=var.dims, attributes=attributes)
            if var.name in values:
                array[:] = np.asarray(values[var.name], dtype=var.dtype)
        # the marker goes last: a half-created directory is not a trajden store
        group.attrs.update(root_attrs)
        cls._check_path(final_path, overwrite)  # again: another process may have created it meanwhile
        trash = None
        if os.path.lexists(final_path):
            if is_trajden_store(final_path):
                trash = final_path.with_name(f".{final_path.name}.removed-{uuid.uuid4().hex[:12]}")
                os.rename(final_path, trash)
            else:
                os.rmdir(final_path)  # the empty directory _check_path accepted
        os.rename(path, final_path)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return cls(final_path, zarr.open_group(str(final_path), mode="r+", zarr_format=3), "r+")

    @staticmethod
    def _check_path(path: Path, overwrite: bool) -> None:
        """Refuse a destination that is not ours to replace (nothing is changed here)."""
        if not os.path.lexists(path):
            return
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            return  # an empty directory: nothing to lose
        if not is_trajden_store(path):
            raise StoreError(f"{path} exists and is not a trajden store; refusing to touch it")
        if not overwrite:
            raise StoreError(f"{path} exists; pass overwrite (--overwrite) to replace it, or resume it")
        holder = _read_lock(path / names.STORE_LOCK)
        if holder is not None and not (holder and _lock_is_stale(holder)):
            raise StoreError(_lock_message(path, holder) + "; refusing to overwrite",
                             hint="wait for that run to end", retryable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r+") -> Store:
        """Open an existing store (``mode`` "r" or "r+")."""
        import zarr

        path = Path(path)
        if mode not in ("r", "r+"):
            raise StoreError(f"{path}: mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise StoreError(f"{path} does not exist")
        if not is_trajden_store(path):
            raise StoreError(f"{path} is not a trajden store")
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        fmt = group.attrs.get(names.ATTR_STORE_FORMAT)
        if not isinstance(fmt, int) or fmt > STORE_FORMAT:
            raise StoreError(f"{path}: store format {fmt!r} is not supported by this trajden "
                             f"(supports <= {STORE_FORMAT})")
        try:
            return cls(path, group, mode)
        except KeyError as exc:
            raise StoreError(f"{path} is an incomplete trajden store (missing {exc.args[0]})") from None

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, *, overwrite: bool = False, **create_kwargs: Any
                       ) -> tuple[Store, bool]:
        """Resume a compatible existing store (``created=False``) or create a new one (``created=True``).

        Compatible means: same ``run_config``, ``n_frames``, ``atom_ids``, ``types``, ``steps``, classifiers,
        ``keep_raw`` and ``max_iterations`` (rms_history length); chunking is taken from the existing store.
        An incompatible store raises StoreError naming the differences, unless ``overwrite``.
        """
        path = Path(path)
        if overwrite or not is_trajden_store(path):
            return cls.create(path, overwrite=overwrite, **create_kwargs), True
        store = cls.open(path, mode="r+")
        problems = store._incompatibilities(**create_kwargs)
        if problems:
            raise StoreError(f"{path} holds an incompatible run: {'; '.join(problems)} "
                             f"(use --overwrite to replace it, or another output path)")
        return store, False

    def _incompatibilities(self, *, n_frames: int, atom_ids: np.ndarray, types: np.ndarray | None = None,
                           steps: np.ndarray | None = None, classifiers: Sequence[str] = (names.ACNA, names.PTM),
                           keep_raw: bool = False, run_config: Mapping[str, Any] | None = None,
                           max_iterations: int | None = None, elements: Any = None,
                           **_ignored: Any) -> list[str]:
        problems: list[str] = []
        wanted = json.loads(_canonical_json(_plain(dict(run_config or {})), f"{self._path}: run_config"))
        if not self._has(names.VAR_ELEMENT) and names.ATTR_SPECIES not in self.run_config:
            wanted.pop(names.ATTR_SPECIES, None)  # a store from before species were read: nothing to compare
        if "species_map" not in self.run_config:
            wanted.pop("species_map", None)  # nor before models were chosen by the input's elements
        problems += _dict_diff(self.run_config, wanted, "run_config")
        if int(n_frames) != self.n_frames:
            problems.append(f"n_frames: stored {self.n_frames}, now {int(n_frames)}")
        atom_ids = np.asarray(atom_ids)
        if atom_ids.shape != (self.n_atoms,):
            problems.append(f"atoms: stored {self.n_atoms}, now {atom_ids.size}")
        elif not np.array_equal(atom_ids, self._array(names.COORD_ATOM_ID)[:]):
            problems.append("atom_ids differ")
        else:
            if types is not None and not np.array_equal(np.asarray(types), self._array(names.VAR_TYPE)[:]):
                problems.append("atom types differ")
        if steps is not None and int(n_frames) == self.n_frames and \
                not np.array_equal(np.asarray(steps), self._array(names.COORD_STEP)[:]):
            problems.append("frame steps differ")
        if tuple(sorted(classifiers)) != tuple(sorted(self._classifiers)):
            problems.append(f"classifiers: stored {list(self._classifiers)}, now {list(classifiers)}")
        if bool(keep_raw) != self._keep_raw:
            problems.append(f"keep_raw: stored {self._keep_raw}, now {bool(keep_raw)}")
        if elements is not None and self._has(names.VAR_ELEMENT) and atom_ids.shape == (self.n_atoms,) and \
                not np.array_equal(_atomic_numbers(elements, self.n_atoms, self._path),
                                   self._array(names.VAR_ELEMENT)[:]):
            problems.append("atom elements differ")
        if (int(max_iterations) if max_iterations is not None else None) != self.max_iterations:
            problems.append(f"rms_history length (max_iterations): stored {self.max_iterations}, now {max_iterations}")
        return problems

    def __reduce__(self):  # picklable for Dask tasks: reopens by path
        return (type(self).open, (str(self._path), self._mode))

    # ---- properties ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_frames(self) -> int:
        return self._n_frames

    @property
    def n_atoms(self) -> int:
        return self._n_atoms

    @property
    def frames_per_chunk(self) -> int:
        return self._frames_per_chunk

    @property
    def atoms_per_chunk(self) -> int:
        return self._atoms_per_chunk

    @property
    def classifiers(self) -> tuple[str, ...]:
        return self._classifiers

    @property
    def keep_raw(self) -> bool:
        return self._keep_raw

    @property
    def max_iterations(self) -> int | None:
        """Length of the ``iteration`` dim of ``rms_history``; None if the store has no history."""
        return self._history_len or None

    @property
    def label_vars(self) -> tuple[str, ...]:
        """Names of the label variables (after, then before denoising, per classifier)."""
        return tuple(names.structure_var(c, raw) for c in self._classifiers for raw in (False, True)) + \
            self._extra_labels

    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes as stored (JSON-valued ones are strings)."""
        return dict(self._group.attrs.asdict())

    @property
    def run_config(self) -> dict[str, Any]:
        return json.loads(self._group.attrs.get(names.ATTR_RUN_CONFIG, "{}"))

    @property
    def elements(self) -> np.ndarray | None:
        """(n_atoms,) element symbols ("" where unknown); None for a store written before elements were stored."""
        if not self._has(names.VAR_ELEMENT):
            return None
        from ase.data import chemical_symbols

        table = np.array([""] + chemical_symbols[1:], dtype=str)
        return table[np.asarray(self._array(names.VAR_ELEMENT)[:], dtype=np.intp)]

    @property
    def type_elements(self) -> dict[int, str]:
        """{type: element} as recorded (root attribute ``species``); empty if unknown or not recorded."""
        return {int(t): e for t, e in json.loads(self._group.attrs.get(names.ATTR_SPECIES, "{}")).items()}

    def _has(self, name: str) -> bool:
        """Whether the store holds variable ``name`` (see :func:`trajden.schema.variables`)."""
        return name in self._variable_names

    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self._group[name]
        return arr

    # ---- progress -----------------------------------------------------------------------------

    def completed(self) -> np.ndarray:
        """(n_frames,) bool: frames whose write finished."""
        return np.asarray(self._array(names.VAR_COMPLETE)[:], dtype=bool)

    def frame_chunks(self) -> list[list[int]]:
        """All frame indices grouped by frame chunk."""
        fpc, n = self._frames_per_chunk, self._n_frames
        return [list(range(s, min(s + fpc, n))) for s in range(0, n, fpc)]

    def pending_chunks(self, retry_failed: bool = False) -> list[list[int]]:
        """Frame chunks (all their frame indices) that hold an incomplete frame.

        With ``retry_failed`` chunks holding a frame without a result (FAILED, BAD_INPUT) count as pending too
        (such frames are never marked complete; this also covers stores of older versions that marked them).
        """
        todo = ~self.completed()
        if retry_failed:
            todo |= np.isin(self._array(names.VAR_STATUS)[:], names.FRAME_STATUS_NO_RESULT)
        return [chunk for chunk in self.frame_chunks() if todo[chunk[0]: chunk[-1] + 1].any()]

    # ---- writing ------------------------------------------------------------------------------

    def write_frames(self, results: Sequence[FrameResult]) -> None:
        """Region-write the frames of ``results`` (whole frame chunks), then mark those with a result complete.

        Frames whose status is one of ``names.FRAME_STATUS_NO_RESULT`` are written (their status, fill values
        elsewhere) but stay incomplete, so that readers skip them and a resumed run retries them.
        """
        if not results:
            return
        if self._mode == "r":
            raise StoreError(f"{self._path} is open read-only")
        by_index: dict[int, FrameResult] = {}
        for res in results:
            i = int(res.index)
            if not 0 <= i < self._n_frames:
                raise StoreError(f"{self._path}: frame index {i} out of range [0, {self._n_frames})")
            if i in by_index:
                raise StoreError(f"{self._path}: frame {i} given twice")
            by_index[i] = res
        fpc, n = self._frames_per_chunk, self._n_frames
        chunk_ids = sorted({i // fpc for i in by_index})
        for c in chunk_ids:
            start, stop = c * fpc, min((c + 1) * fpc, n)
            if any(i not in by_index for i in range(start, stop)):
                have = sorted(i for i in by_index if start <= i < stop)
                raise StoreError(f"{self._path}: frames {have} do not cover frame chunk {c} (frames {start}.."
                                 f"{stop - 1}); writers must write whole chunks")
        runs: list[tuple[int, int]] = []  # contiguous runs of chunks -> frame ranges
        for c in chunk_ids:
            start, stop = c * fpc, min((c + 1) * fpc, n)
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        blocks = [(start, stop, self._blocks([by_index[i] for i in range(start, stop)])) for start, stop in runs]
        for start, stop, block in blocks:
            for name, data in block.items():
                self._array(name)[start:stop] = data
        # the completion mark goes last
        for start, stop, block in blocks:
            self._mark_complete(start, stop, ~np.isin(block[names.VAR_STATUS], names.FRAME_STATUS_NO_RESULT))

    def _mark_complete(self, start: int, stop: int, done: np.ndarray) -> None:
        self._array(names.VAR_COMPLETE)[start:stop] = np.asarray(done, dtype=bool)

    def _blocks(self, results: list[FrameResult]) -> dict[str, np.ndarray]:
        m, N = len(results), self._n_atoms
        sizes = schema.dim_sizes(m, N, self._history_len)
        # one block per variable written frame by frame, holding its fill value until a result is copied in
        out = {var.name: var.block_array(m, sizes) for var in self._variables if var.block}
        label_vars = self.label_vars
        for k, res in enumerate(results):
            where = f"{self._path}: frame {res.index}"
            status = int(res.status)
            if status not in names.FRAME_STATUS_NAMES:
                raise StoreError(f"{where}: unknown status {status}")
            failed = status in names.FRAME_STATUS_NO_RESULT
            out[names.VAR_STATUS][k] = status

            put = _BlockPut(out, k, where, required=not failed)
            put(names.VAR_POSITIONS, res.positions, (N, 3))
            put(names.VAR_DISPLACEMENT, res.displacement, (N,))
            put(names.VAR_CELL, res.cell, (3, 3), required=False)
            if names.VAR_ORIGIN in out:
                put(names.VAR_ORIGIN, res.origin, (3,), required=False)
            if names.VAR_PBC in out:
                put(names.VAR_PBC, None if res.pbc is None else np.asarray(res.pbc, dtype=np.int8), (3,),
                    required=False)
            if names.VAR_POSITIONS_RAW in out:
                put(names.VAR_POSITIONS_RAW, res.positions_raw, (N, 3))
            labels = res.labels or {}
            unknown = sorted(set(labels) - set(label_vars))
            if unknown:
                raise StoreError(f"{where}: label variables {unknown} are not in the store (has {list(label_vars)})")
            for var in label_vars:
                value = labels.get(var)
                if value is not None:
                    value = np.asarray(value)
                    if value.size and (value.min() < LABEL_FILL or value.max() > max(names.STRUCTURE_NAMES)):
                        raise StoreError(f"{where}: {var} holds codes outside [{LABEL_FILL}, "
                                         f"{max(names.STRUCTURE_NAMES)}]")
                put(var, value, (N,))
            if names.VAR_RMS_HISTORY in out and res.rms_history is not None:
                hist = np.asarray(res.rms_history, dtype=np.float32).ravel()
                if hist.size > self._history_len:
                    raise StoreError(f"{where}: rms_history has {hist.size} entries, the store holds "
                                     f"{self._history_len}")
                out[names.VAR_RMS_HISTORY][k, : hist.size] = hist
            if res.iterations is not None:
                out[names.VAR_ITERATIONS][k] = int(res.iterations)
            if res.residual is not None:
                out[names.VAR_RESIDUAL][k] = float(res.residual)
            if res.scale is not None:
                out[names.VAR_SCALE][k] = float(res.scale)
            if names.VAR_EVALUATOR in out and res.evaluator is not None:
                if int(res.evaluator) not in names.EVALUATOR_NAMES:
                    raise StoreError(f"{where}: unknown evaluator code {res.evaluator}")
                out[names.VAR_EVALUATOR][k] = int(res.evaluator)
            if names.VAR_SCOPE in out and res.scope is not None:
                scope = np.asarray(res.scope)
                if scope.size and (scope.min() < 0 or scope.max() > max(names.SCOPE_NAMES)):
                    raise StoreError(f"{where}: scope holds codes outside [0, {max(names.SCOPE_NAMES)}]")
                put(names.VAR_SCOPE, scope, (N,), required=False)
                out[names.VAR_N_KEPT_RAW][k] = int(np.count_nonzero(scope))
            if names.VAR_MOBILE_FRACTION in out and res.mobile_fraction is not None:
                out[names.VAR_MOBILE_FRACTION][k] = float(res.mobile_fraction)
        return out

    # ---- locking and reading ------------------------------------------------------------------

    def lock(self) -> RunLock:
        """Exclusive run lock: ``with store.lock(): ...``; raises StoreError if a live process holds it."""
        return RunLock(self._path)

    def to_xarray(self, **kwargs: Any):
        """The store as an ``xarray.Dataset`` (lazy, dask-backed)."""
        import xarray

        return xarray.open_zarr(str(self._path), consolidated=False, **kwargs)

    def __repr__(self) -> str:
        done = int(self.completed().sum())
        return (f"Store({str(self._path)!r}, frames={self._n_frames} ({done} complete), atoms={self._n_atoms}, "
                f"classifiers={list(self._classifiers)}, keep_raw={self._keep_raw})")
