"""The reader contract: the frame records every trajectory reader yields, and how readers report bad input.

Readers
-------
One reader per format family turns frame ``i`` of one file into a :class:`DumpFrame`:

* LAMMPS text dumps: :class:`trajden.io.lammps_dump.TrajdenDumpReader`, an MDAnalysis reader over the fast
  parser :class:`~trajden.io.lammps_dump.LammpsDump`. What an MDAnalysis ``Timestep`` cannot hold exactly is
  in ``ts.data`` (see :data:`TS_DATA_KEYS`), so the pipeline and ``mda.Universe(path,
  format="TRAJDEN_LAMMPSDUMP")`` read dumps through the same code;
* other MDAnalysis formats (XTC, TRR, DCD, PDB, GRO, LAMMPS data, ...): MDAnalysis' own readers;
* (extended) XYZ and the formats only ASE reads: ASE.

A :class:`DumpFrame` holds, for the ``N`` atoms of the frame, in one order (the file's, or sorted by id):

* ``positions``: (N, 3) float64, Cartesian, angstrom, in the file's frame (the cell origin is not
  subtracted, atoms are not wrapped);
* ``cell``: (3, 3) float64, lattice vectors as rows (all zeros without a cell); ``origin``: (3,) float64,
  the cell's corner; ``pbc``: periodic along each cell vector;
* ``ids``: (N,) int64; ``types``: (N,) int32 atom types, or strings (element or atom names) where the
  file has no numbered types; ``elements``: (N,) element names as the file gives them, or None;
* ``step`` and ``time`` (ps): None where the file has none.

:class:`trajden.io.readers.Trajectory` numbers the frames of its files and turns each :class:`DumpFrame`
into a :class:`Frame`: atoms sorted by id, ids checked against frame 0, types numbered, elements resolved
(:mod:`trajden.io.species`), the step and time filled in.

Errors
------
A known problem with the input (a missing file, a malformed line, an implausible box) is raised as
:class:`~trajden.errors.InputError` (alias ``TrajectoryError``) made by :func:`_error`, whose one-line
message names the file, the frame and, where known, the line: ``"traj.dump: frame 3, line 1207: ..."``.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from trajden.errors import InputError
from trajden.io import species as species_mod

__all__ = ["TS_DATA_KEYS", "DumpFrame", "Frame"]

#: what :class:`~trajden.io.lammps_dump.TrajdenDumpReader` puts into ``ts.data`` besides MDAnalysis' own ``dt``:
#: the :class:`DumpFrame` fields, ``positions`` named ``absolute_positions`` (``ts.positions`` are relative
#: to the origin, float32, and rotated where the cell is not lower-triangular), ``time`` the file's or
#: ``step`` times the reader's ``timestep_ps``
TS_DATA_KEYS = ("step", "time", "absolute_positions", "cell", "origin", "pbc", "ids", "types", "elements")


def _where(path: str | os.PathLike, frame: int | None = None, line: int | None = None) -> str:
    """``"path"``, ``"path: frame F"``, ``"path: frame F, line L"`` or ``"path: line L"``."""
    out = os.fspath(path)
    if frame is not None:
        out += f": frame {frame}"
    if line is not None:
        out += f", line {line}" if frame is not None else f": line {line}"
    return out


def _error(path: str | os.PathLike, msg: str, frame: int | None = None, line: int | None = None) -> InputError:
    """The :class:`~trajden.errors.InputError` for ``msg`` at ``path`` (frame, line), as one line."""
    text = f"{_where(path, frame, line)}: {msg}"
    return InputError(" ".join(text.split("\n")))


@dataclass
class DumpFrame:
    """One frame of one file as a reader gives it, before a :class:`~trajden.io.readers.Trajectory` numbers it.

    See the module docstring for the fields. ``step`` / ``time`` are None where the file has none.
    """

    step: int | None
    time: float | None
    positions: np.ndarray
    cell: np.ndarray
    origin: np.ndarray
    ids: np.ndarray
    types: np.ndarray
    elements: np.ndarray | None = None  # (N,) str, per-atom element names as the file gives them (not checked)
    pbc: tuple[bool, bool, bool] = (True, True, True)  # periodic along each cell vector


@dataclass
class Frame:
    """One snapshot, numbered in the (concatenated) trajectory.

    Attributes
    ----------
    index : global frame index in the trajectory
    step : MD timestep (the frame index where the format has none)
    time : ps; LAMMPS dumps without ITEM: TIME: ``step * timestep_ps``
    positions : (N, 3) float64, Cartesian, angstrom, atoms sorted by id, as in the file (not shifted by the
        origin, not wrapped: LAMMPS ``x`` may lie slightly outside the cell, ``xu`` anywhere)
    cell : (3, 3) float64, lattice vectors as rows (all zeros for a non-periodic frame)
    origin : (3,) float64, corner of the cell
    ids : (N,) int64, ascending
    types : (N,) int32, 1-based (element names: 1..n in order of first appearance in frame 0)
    source : the file the frame came from
    elements : (N,) str element symbols ("Ni", ...), or None where they are unknown (then
        :func:`trajden.io.species.require_elements` allows only a single atom type)
    type_elements : {type: element} of the trajectory, for the types whose element is known
    elements_origin : where the elements came from (``trajden.io.species.ORIGIN_*``), None if unknown
    pbc : (3,) bool, periodic along each cell vector (LAMMPS boundary ``pp``; ``f``, ``s``, ``m`` are not);
        all False for a frame without a cell
    """

    index: int
    step: int
    time: float
    positions: np.ndarray
    cell: np.ndarray
    origin: np.ndarray
    ids: np.ndarray
    types: np.ndarray
    source: str
    elements: np.ndarray | None = None
    type_elements: dict[int, str] = field(default_factory=dict)
    elements_origin: str | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=bool))

    @property
    def n_atoms(self) -> int:
        return len(self.positions)

    @property
    def atomic_numbers(self) -> np.ndarray:
        """(N,) int16 atomic numbers; 0 where the element is unknown."""
        return species_mod.atomic_numbers(self.elements, self.n_atoms)
