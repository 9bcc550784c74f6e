"""Trajectory input: :class:`Trajectory` / :class:`Frame` for any format, a fast LAMMPS dump reader, and the
LAMMPS dump writer (:func:`write_frame`, :func:`write_dump`).

The frame records and the reader contract are in :mod:`trajden.io.base`.

Importing this package registers the ``"TRAJDEN_LAMMPSDUMP"`` format with MDAnalysis.
"""

from trajden.io.dump_writer import write_dump, write_frame
from trajden.io.lammps_dump import LammpsDump, TrajdenDumpParser, TrajdenDumpReader
from trajden.io.readers import Frame, Trajectory, TrajectoryError, parse_frames, resolve_format

__all__ = [
    "Frame",
    "LammpsDump",
    "TrajdenDumpParser",
    "TrajdenDumpReader",
    "Trajectory",
    "TrajectoryError",
    "parse_frames",
    "resolve_format",
    "write_dump",
    "write_frame",
]
