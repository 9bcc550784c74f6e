"""Ideal reference lattices normalised to one nearest-neighbour distance, and synthetic thermal noise.

Every lattice is built with its nearest-neighbour distance equal to ``d_nn`` (default 1.0), so a model
trained on them works in units of the nearest-neighbour distance (see :mod:`trajden.scale`). For the
two-element prototypes (:data:`COMPOUNDS`) that distance is the shortest bond of any pair (Si-O in silica,
Na-Cl in rocksalt), the first peak of g(r) that :func:`trajden.scale.estimate_nn_distance` finds.

Two-element prototypes carry a *role* per site in ``Crystal.types``: 0 for the first element of the formula
(A in A_mB_n: Cs in B2 CsCl, Cu in L1_2 Cu3Au, Na in rocksalt, Zn in zincblende/wurtzite, Ca in fluorite,
Si in silica), 1 for the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajden import names

#: one-element structures trajden knows, by short name (see :data:`trajden.names.STRUCTURE_CODES`)
STRUCTURES = ("fcc", "bcc", "hcp", "sc", "cd", "hd")

#: two-element prototypes (Strukturbericht names where they exist; silica polymorphs by name)
COMPOUNDS = (
    "b2",  # CsCl: two interpenetrating simple cubic lattices (sites of bcc)
    "l10",  # CuAu: fcc with alternating (001) planes, ideal c/a = 1
    "l12",  # Cu3Au: fcc, B on the cube corners
    "b1",  # rocksalt NaCl (sites of sc)
    "b3",  # zincblende ZnS (sites of cubic diamond)
    "b4",  # wurtzite ZnS, ideal c/a and u = 3/8 (sites of hexagonal diamond)
    "c1",  # fluorite CaF2
    "beta-cristobalite",  # SiO2, idealised Fd-3m (C9): Si on cubic diamond sites, O at the bond midpoints
    "alpha-cristobalite",  # SiO2, P4_12_12 (Downs & Palmer 1994 room-temperature coordinates)
    "alpha-quartz",  # SiO2, P3_121 (Levien et al. 1980 coordinates)
    "beta-quartz",  # SiO2, P6_222 (Wright & Lehmann 1981 coordinates)
)

#: PTM label each role's sites carry in a prototype when PTM sees the atoms named (``None``: all atoms; a
#: role number: only that role's atoms, e.g. Si in cristobalite); prototypes without such a label are absent
PROTOTYPE_PTM = {
    "b2": (None, "bcc"),
    "l10": (None, "fcc"),
    "l12": (None, "fcc"),
    "b1": (None, "sc"),
    "b3": (None, "cd"),
    "b4": (None, "hd"),
    "c1": (0, "fcc"),
    "beta-cristobalite": (0, "cd"),
}


@dataclass(frozen=True)
class Crystal:
    """A periodic cell: ``positions`` (N, 3), ``cell`` (3, 3) with lattice vectors as rows, ``types`` (N,)."""

    positions: np.ndarray
    cell: np.ndarray
    types: np.ndarray
    structure: str

    @property
    def n_atoms(self) -> int:
        return len(self.positions)

    @property
    def code(self) -> int:
        """OVITO structure code of this (one-element) lattice."""
        return names.STRUCTURE_CODES[self.structure]


def unit_cell(structure: str, d_nn: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal conventional cell of ``structure`` with nearest-neighbour distance ``d_nn``.

    Returns
    -------
    frac : (M, 3) fractional coordinates of the basis
    lengths : (3,) edge lengths of the orthogonal cell
    """
    s3 = np.sqrt(3.0)
    if structure == "fcc":
        a = d_nn * np.sqrt(2.0)
        frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
        lengths = np.array([a, a, a])
    elif structure == "bcc":
        a = d_nn * 2.0 / s3
        frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
        lengths = np.array([a, a, a])
    elif structure == "sc":
        frac = np.zeros((1, 3))
        lengths = np.array([d_nn, d_nn, d_nn])
    elif structure == "cd":
        a = d_nn * 4.0 / s3
        fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
        frac = np.vstack([fcc, fcc + 0.25])
        lengths = np.array([a, a, a])
    elif structure == "hcp":
        # orthohexagonal cell (a, sqrt(3) a, c), ideal c/a
        a = d_nn
        c = a * np.sqrt(8.0 / 3.0)
        frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 5 / 6, 0.5], [0, 1 / 3, 0.5]])
        lengths = np.array([a, a * s3, c])
    elif structure == "hd":
        # hexagonal diamond (lonsdaleite), ideal: bond d_nn = a sqrt(3/8), c = sqrt(8/3) a, u = 3/8
        a = d_nn / np.sqrt(3.0 / 8.0)
        c = a * np.sqrt(8.0 / 3.0)
        base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 5 / 6, 0.5], [0, 1 / 3, 0.5]])
        frac = np.vstack([base, base + [0, 0, 3 / 8]])
        lengths = np.array([a, a * s3, c])
    else:
        raise ValueError(f"unknown structure {structure!r}; expected one of {STRUCTURES}")
    return np.mod(frac, 1.0), lengths


_FCC = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def _hexagonal(a: float, c: float) -> np.ndarray:
    return np.array([[a, 0.0, 0.0], [-0.5 * a, 0.5 * np.sqrt(3.0) * a, 0.0], [0.0, 0.0, c]])


def _spacegroup(sg: int, basis, cellpar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites of a Si/O crystal from its asymmetric unit (ase's space-group tables)."""
    from ase.spacegroup import crystal

    atoms = crystal(["Si", "O"], basis=basis, spacegroup=sg, cellpar=cellpar)
    roles = np.array([0 if s == "Si" else 1 for s in atoms.get_chemical_symbols()])
    return atoms.get_scaled_positions(), np.array(atoms.cell.array), roles


def _shortest_bond(frac: np.ndarray, cell: np.ndarray) -> float:
    """Shortest distance between two sites of a periodic cell (images included)."""
    pos = frac @ cell
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ cell
    d = np.linalg.norm(pos[:, None, None, :] - pos[None, :, None, :] - shifts[None, None, :, :], axis=-1)
    return float(d[d > 1e-8].min())


def compound_cell(prototype: str, d_nn: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conventional cell of a two-element ``prototype`` whose shortest bond is ``d_nn``.

    Returns
    -------
    frac : (M, 3) fractional coordinates of the basis
    cell : (3, 3) lattice vectors as rows
    roles : (M,) 0 for the formula's first element, 1 for the second
    """
    eye = np.eye(3)
    if prototype == "b2":
        frac, cell, roles = np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), eye, np.array([0, 1])
    elif prototype == "l10":
        frac, cell, roles = _FCC, eye, np.array([0, 0, 1, 1])
    elif prototype == "l12":
        frac, cell, roles = _FCC, eye, np.array([1, 0, 0, 0])
    elif prototype == "b1":
        frac, cell, roles = np.vstack([_FCC, _FCC + [0.5, 0, 0]]), eye, np.repeat([0, 1], 4)
    elif prototype == "b3":
        frac, cell, roles = np.vstack([_FCC, _FCC + 0.25]), eye, np.repeat([0, 1], 4)
    elif prototype == "c1":
        frac, cell, roles = np.vstack([_FCC, _FCC + 0.25, _FCC + 0.75]), eye, np.repeat([0, 1, 1], 4)
    elif prototype == "b4":
        base = np.array([[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5]])
        frac = np.vstack([base, base + [0, 0, 3 / 8]])
        cell, roles = _hexagonal(1.0, np.sqrt(8.0 / 3.0)), np.array([0, 0, 1, 1])
    elif prototype == "beta-cristobalite":
        si = np.vstack([_FCC, _FCC + 0.25])
        o = np.vstack([_FCC + 0.125, _FCC + [0.125, 0.375, 0.375], _FCC + [0.375, 0.125, 0.375],
                       _FCC + [0.375, 0.375, 0.125]])
        frac, cell, roles = np.vstack([si, o]), eye, np.repeat([0, 1], [8, 16])
    elif prototype == "alpha-cristobalite":
        frac, cell, roles = _spacegroup(92, [(0.3003, 0.3003, 0.0), (0.2392, 0.1044, 0.1787)],
                                        [4.9717, 4.9717, 6.9223, 90, 90, 90])
    elif prototype == "alpha-quartz":
        frac, cell, roles = _spacegroup(152, [(0.4697, 0.0, 1 / 3), (0.4135, 0.2669, 0.2142)],
                                        [4.9134, 4.9134, 5.4052, 90, 90, 120])
    elif prototype == "beta-quartz":
        frac, cell, roles = _spacegroup(180, [(0.5, 0.0, 0.0), (0.2083, 0.4166, 0.5)],
                                        [4.9965, 4.9965, 5.4570, 90, 90, 120])
    else:
        raise ValueError(f"unknown prototype {prototype!r}; expected one of {COMPOUNDS}")
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    cell = np.asarray(cell, dtype=np.float64)
    cell = cell * (d_nn / _shortest_bond(frac, cell))
    return frac, cell, np.asarray(roles, dtype=np.int64)


def make_crystal(
    structure: str,
    n_atoms: int = 2000,
    d_nn: float = 1.0,
    reps: tuple[int, int, int] | None = None,
    species: int = 0,
) -> Crystal:
    """Ideal periodic ``structure`` with about ``n_atoms`` atoms in a near-cubic supercell.

    Parameters
    ----------
    structure : one of :data:`STRUCTURES` or :data:`COMPOUNDS`
    n_atoms : target atom count (ignored when ``reps`` is given)
    d_nn : nearest-neighbour distance (a compound's shortest bond)
    reps : explicit repetitions of the conventional cell
    species : type index given to every atom of a one-element structure (compounds: the site roles)
    """
    if structure in COMPOUNDS:
        frac, unit, roles = compound_cell(structure, d_nn)
    else:
        frac, lengths = unit_cell(structure, d_nn)
        unit, roles = np.diag(lengths), np.full(len(frac), species, dtype=np.int64)
    if reps is None:
        volume = n_atoms / len(frac) * abs(np.linalg.det(unit))
        side = volume ** (1.0 / 3.0)
        reps = tuple(max(1, int(round(side / L))) for L in np.linalg.norm(unit, axis=1))
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    frac_all = (grid[:, None, :] + frac[None, :, :]).reshape(-1, 3) / np.asarray(reps)
    cell = unit * np.asarray(reps, dtype=np.float64)[:, None]
    positions = frac_all @ cell
    types = np.tile(roles, len(grid))
    return Crystal(positions.astype(np.float64), cell.astype(np.float64), types, structure)


def add_noise(
    positions: np.ndarray, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy, displacement)`` with i.i.d. Gaussian ``displacement = sigma * eps`` per coordinate."""
    displacement = sigma * rng.standard_normal(positions.shape)
    return positions + displacement, displacement


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (3, 3)."""
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
