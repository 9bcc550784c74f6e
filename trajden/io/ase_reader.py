"""Trajectories in any format ASE reads (``.traj``, VASP, CIF, ...) as a :class:`trajden.io.readers.Trajectory`
source: ``trajden process run.traj`` or ``--format ase`` (``ase:<ase format>`` names ASE's format)."""

from __future__ import annotations

import os

import numpy as np

from trajden.io.base import DumpFrame, _error

#: format name of this source in :func:`trajden.io.readers.resolve_format`
ASE = "ASE"
#: suffixes and file names read through ASE without ``--format`` (formats MDAnalysis does not read)
SUFFIXES = (".traj", ".cif", ".vasp", ".xsf", ".cfg", ".res", ".castep", ".gen")
FILE_NAMES = ("POSCAR", "CONTCAR", "XDATCAR", "OUTCAR", "vasprun.xml")


def is_ase_name(path: str) -> bool:
    """Whether ``path``'s suffix or name is one that only ASE reads (among trajden's readers)."""
    base = os.path.basename(path)
    return base.lower().endswith(SUFFIXES) or any(base.startswith(n) for n in FILE_NAMES)


def ase_format(fmt: str) -> str | None:
    """``"ASE"`` -> None (ASE guesses from the file), ``"ASE:vasp-xdatcar"`` -> ``"vasp-xdatcar"``."""
    return (fmt.split(":", 1)[1] or None) if ":" in fmt else None


class ASESource:
    """One file read with ``ase.io.read``; the state (picklable) is the frame and atom counts."""

    def __init__(self, path: str, fmt: str = ASE, state: dict | None = None):
        self.path = path
        self.format = ase_format(fmt)
        if not os.path.isfile(path):
            raise _error(path, "no such file")
        if state is None:
            state = self._index()
        self.state = state
        self.n_frames = int(state["n_frames"])
        self.n_atoms = int(state["n_atoms"])
        self.warnings: list[str] = []
        self.steps = None
        self.times = None

    def _read(self, index):
        import ase.io

        try:
            return ase.io.read(self.path, index=index, format=self.format)
        except Exception as exc:  # noqa: BLE001 - ase raises many types on unreadable input
            msg = " ".join(str(exc).split())[:200]
            frame = index if isinstance(index, int) else None
            raise _error(self.path, f"ASE cannot read this file ({type(exc).__name__}: {msg})", frame) from None

    def _index(self) -> dict:
        if self.path.lower().endswith(".traj") and self.format in (None, "traj"):
            from ase.io.trajectory import Trajectory

            try:
                with Trajectory(self.path) as t:  # random access: only the header and the first frame
                    n = len(t)
                    n_atoms = len(t[0]) if n else 0
            except Exception as exc:  # noqa: BLE001 - ase raises many types on unreadable input
                msg = " ".join(str(exc).split())[:200]
                raise _error(self.path, f"ASE cannot read this file ({type(exc).__name__}: {msg})") from None
            if n == 0:
                raise _error(self.path, "no frame in file")
            return {"n_frames": n, "n_atoms": n_atoms}
        frames = self._read(":")
        if not frames:
            raise _error(self.path, "no frame in file")
        return {"n_frames": len(frames), "n_atoms": len(frames[0])}

    def read(self, i: int) -> DumpFrame:
        atoms = self._read(int(i))
        n = len(atoms)
        ids = atoms.arrays.get("id")
        ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        types = atoms.arrays.get("type")
        if types is None:
            types = np.array(atoms.get_chemical_symbols(), dtype=object)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = np.array(atoms.cell.array, dtype=np.float64) if atoms.cell.rank == 3 and pbc.all() else np.zeros((3, 3))
        info = atoms.info
        step, time = info.get("step", info.get("timestep")), info.get("time")
        return DumpFrame(
            step=None if step is None else int(step),
            time=None if time is None else float(time),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=cell,
            origin=np.asarray(info.get("origin", np.zeros(3)), dtype=np.float64).reshape(3),
            ids=ids,
            types=types,
        )
