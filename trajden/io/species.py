"""Chemical species of the atoms: element symbols from files, from ``--species``, from LAMMPS masses.

A :class:`~trajden.io.readers.Frame` carries one element symbol per atom (``Frame.elements``) and the
trajectory's type -> element map (``Frame.type_elements``). They come, in this order of authority, from

1. the file itself (a dump's ``element`` column, extxyz/XYZ symbols, a topology's element column): these
   are never overridden; ``species=`` / ``--species`` must agree with them;
2. ``species=`` / ``--species Ni,Al``: LAMMPS types 1..n are these elements;
3. inferences, used only where 1 and 2 say nothing, and reported as warnings: the masses of a LAMMPS
   data file (:func:`element_from_mass`) or MDAnalysis' guess from atom names.

An input with several atom types and no element for some of them is refused (:func:`require_elements`):
trajden never guesses chemistry. A single-type input without element information is accepted, its
element recorded as unknown.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from trajden.errors import TrajectoryError

__all__ = [
    "MASS_TOLERANCE",
    "ORIGIN_COLUMN",
    "ORIGIN_FLAG",
    "ORIGIN_MASSES",
    "ORIGIN_NAMES",
    "ORIGIN_SYMBOLS",
    "ORIGIN_TOPOLOGY",
    "SpeciesError",
    "atomic_numbers",
    "element_from_mass",
    "elements_from_lammps_data",
    "normalise_symbol",
    "parse_species",
    "require_elements",
    "type_element_map",
]

#: largest |mass - standard atomic mass| (u) for a mass to name an element (:func:`element_from_mass`)
MASS_TOLERANCE = 0.05

# where the elements of a frame came from (Frame.elements_origin, the store's species_source attribute)
ORIGIN_COLUMN = "element column"
ORIGIN_SYMBOLS = "element symbols"
ORIGIN_TOPOLOGY = "topology elements"
ORIGIN_FLAG = "--species"
ORIGIN_MASSES = "LAMMPS data file masses"
ORIGIN_NAMES = "guessed from atom names by MDAnalysis"
#: origins that are read from the input and that ``--species`` must agree with
AUTHORITATIVE = (ORIGIN_COLUMN, ORIGIN_SYMBOLS, ORIGIN_TOPOLOGY)


class SpeciesError(TrajectoryError):
    """The input's chemistry is missing, ambiguous or contradictory (one line, naming file and the fix)."""


def _symbols() -> dict[str, int]:
    from ase.data import atomic_numbers as table

    return {s: z for s, z in table.items() if z > 0}  # "X" (0) is ase's dummy, not an element


def normalise_symbol(symbol: str) -> str | None:
    """The element symbol ``symbol`` names ("ni", "NI", " Ni" -> "Ni"), or None if it names none."""
    s = str(symbol).strip()
    s = s[:1].upper() + s[1:].lower()
    return s if s in _symbols() else None


def parse_species(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Element symbols for LAMMPS types 1, 2, ... from ``"Ni,Al"`` (commas and/or spaces) or a sequence.

    Raises
    ------
    SpeciesError
        an empty list or a name that is no element symbol (the message names ``--species``).
    """
    if spec is None:
        return None
    parts = str(spec).replace(",", " ").split() if isinstance(spec, str) else [str(s) for s in spec]
    shown = ",".join(parts) if not isinstance(spec, str) else spec
    if not parts:
        raise SpeciesError(f"--species {shown!r}: no element given; expected e.g. --species Ni,Al (types 1, 2)")
    out = []
    for p in parts:
        s = normalise_symbol(p)
        if s is None:
            raise SpeciesError(f"--species {shown}: {p!r} is not an element symbol (expected e.g. --species Ni,Al)")
        out.append(s)
    return tuple(out)


def atomic_numbers(elements: np.ndarray | Sequence[str] | None, n: int | None = None) -> np.ndarray:
    """(N,) int16 atomic numbers of ``elements`` (0 for "" / unknown; all 0 for None, which needs ``n``)."""
    if elements is None:
        return np.zeros(0 if n is None else n, dtype=np.int16)
    table = _symbols()
    strs = np.asarray(elements).astype(str)
    uniq, inv = np.unique(strs, return_inverse=True)
    return np.array([table.get(u, 0) for u in uniq], dtype=np.int16)[inv].reshape(strs.shape)


def type_element_map(types: np.ndarray, elements: np.ndarray, where: str) -> dict[int, str]:
    """``{type: element}`` of atoms with numbered ``types`` and ``elements``; one element per type.

    Raises
    ------
    SpeciesError
        a type holding atoms of two elements.
    """
    t = np.asarray(types, dtype=np.int64)
    e = np.asarray(elements).astype(str)
    names, codes = np.unique(e, return_inverse=True)
    t0 = int(t.min()) if len(t) else 0
    keys = np.unique((t - t0) * len(names) + codes.ravel())
    out: dict[int, str] = {}
    for tt, ee in zip((keys // len(names) + t0).tolist(), names[keys % len(names)].tolist()):
        if tt in out:
            raise SpeciesError(f"{where}: atom type {tt} holds atoms of two elements ({out[tt]} and {ee})")
        out[tt] = ee
    return out


def element_from_mass(mass: float, tol: float = MASS_TOLERANCE) -> str | None:
    """The element whose standard atomic mass (``ase.data.atomic_masses``) lies within ``tol`` of ``mass``.

    None where no element or more than one does (ambiguous: not guessed), and for a mass of exactly 1,
    LAMMPS' default and the ``lj`` unit mass, which is not read as hydrogen.
    """
    from ase.data import atomic_masses, chemical_symbols

    m = float(mass)
    if not np.isfinite(m) or m <= 0 or m == 1.0:
        return None
    hits = np.flatnonzero(np.abs(np.asarray(atomic_masses[1:]) - m) <= tol) + 1
    return chemical_symbols[int(hits[0])] if len(hits) == 1 else None


def elements_from_lammps_data(path: str | os.PathLike, tol: float = MASS_TOLERANCE) -> tuple[dict[int, str], list]:
    """Type -> element from the ``Masses`` section of a LAMMPS data file, by :func:`element_from_mass`.

    Returns ``(mapping, warnings)``: types whose mass names no element, or more than one, are left out
    and named in a warning. The file is split into sections by MDAnalysis' ``DATAParser``.

    Raises
    ------
    SpeciesError
        the file cannot be read as a LAMMPS data file, or a ``Masses`` line is malformed.
    """
    from MDAnalysis.topology.LAMMPSParser import DATAParser

    path = os.fspath(path)
    try:
        _, sections = DATAParser(path).grab_datafile()
    except Exception as exc:  # noqa: BLE001 - MDAnalysis raises many types on unreadable input
        msg = " ".join(str(exc).split())[:200]
        raise SpeciesError(f"{path}: cannot read it as a LAMMPS data file ({type(exc).__name__}: {msg})") from None
    lines = sections.get("Masses")
    if not lines:
        return {}, [f"{path}: no Masses section; elements not taken from it"]
    out: dict[int, str] = {}
    unknown: list[str] = []
    for line in lines:
        words = line.split()
        try:
            t, m = int(words[0]), float(words[1])
        except (ValueError, IndexError):
            raise SpeciesError(f"{path}: malformed Masses line {line[:60]!r}") from None
        el = element_from_mass(m, tol)
        if el is None:
            unknown.append(f"type {t} (mass {m:g})")
        else:
            out[t] = el
    warnings = []
    if unknown:
        warnings.append(f"{path}: no single element within {tol:g} u of the mass of {', '.join(unknown)}; "
                        "pass --species to name them")
    return out, warnings


def require_elements(frame) -> None:
    """Raise :class:`SpeciesError` where ``frame`` has several atom types but not every atom's element.

    The message is one line naming the file, the frame and the fix (``--species``). A single-type frame
    without elements passes (its element is unknown).
    """
    if frame.elements is not None:
        return
    kinds = np.unique(frame.types)
    if len(kinds) <= 1:
        return
    missing = [int(t) for t in kinds if int(t) not in (frame.type_elements or {})]
    shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
    example = ",".join(["Ni", "Al", "Cr", "Co", "Fe", "Ti"][: max(2, min(int(kinds.max()), 6))])
    raise SpeciesError(
        f"{frame.source}: frame {frame.index}: {len(kinds)} atom types and no element for type(s) {shown}; "
        f"trajden does not guess chemistry: pass --species (e.g. --species {example} for types 1..{int(kinds.max())}),"
        " or give the dump an element column"
    )
