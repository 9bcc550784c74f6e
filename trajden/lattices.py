"""Ideal reference lattices normalised to one nearest-neighbour distance, and synthetic thermal noise.

Every lattice is built with its nearest-neighbour distance equal to ``d_nn`` (default 1.0), so a model
trained on them works in units of the nearest-neighbour distance (see :mod:`trajden.scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajden import names

#: structures trajden knows, by short name (see :data:`trajden.names.STRUCTURE_CODES`)
STRUCTURES = ("fcc", "bcc", "hcp", "sc", "cd", "hd")


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
        """OVITO structure code of this lattice."""
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
    structure : one of :data:`STRUCTURES`
    n_atoms : target atom count (ignored when ``reps`` is given)
    d_nn : nearest-neighbour distance
    reps : explicit repetitions of the conventional cell
    species : type index given to every atom
    """
    frac, lengths = unit_cell(structure, d_nn)
    if reps is None:
        per_cell = len(frac)
        volume = n_atoms / per_cell * np.prod(lengths)
        side = volume ** (1.0 / 3.0)
        reps = tuple(max(1, int(round(side / L))) for L in lengths)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    frac_all = (grid[:, None, :] + frac[None, :, :]).reshape(-1, 3) / np.asarray(reps)
    cell = np.diag(lengths * np.asarray(reps))
    positions = frac_all @ cell
    types = np.full(len(positions), species, dtype=np.int64)
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
