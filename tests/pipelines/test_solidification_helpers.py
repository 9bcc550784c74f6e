"""The solidification study's nucleus helpers (pipelines/md/solidification.py) on a cluster across the box edge."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_largest_cluster_and_its_centre_across_the_periodic_boundary():
    from pipelines.md import solidification as sol

    rng = np.random.default_rng(3)
    L = 30.0
    cell, origin = np.diag([L, L, L]), np.array([-5.0, 0.0, 0.0])
    # a 5x5x5 simple-cubic blob (spacing 2) centred on the box's x edge, plus 40 scattered atoms
    g = np.stack(np.meshgrid(*[np.arange(-4.0, 5.0, 2.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    blob = g + np.array([origin[0], 15.0, 15.0])  # straddles x = origin (wraps to the far side)
    blob[:, 0] = np.where(blob[:, 0] < origin[0], blob[:, 0] + L, blob[:, 0])
    far = rng.uniform(0, 1, size=(40, 3)) * np.array([10.0, L, L]) + np.array([origin[0] + 10.0, 0, 0])
    pos = np.concatenate([blob, far])
    mask = np.ones(len(pos), dtype=bool)
    mask[-40:] = rng.random(40) < 0.3  # a few scattered masked atoms: never part of the blob's cluster
    size, members, centre = sol.largest_cluster(pos, cell, origin, mask, 2.1)
    assert size == len(blob) == int(members.sum()) and members[: len(blob)].all()
    # the centre is on the boundary (circular mean), not in the middle of the box
    d = sol.distance_from(centre[None, :], cell, np.array([origin[0], 15.0, 15.0]))
    assert float(d[0]) < 1e-6
    assert sol.largest_cluster(pos, cell, origin, np.zeros(len(pos), dtype=bool), 2.1)[0] == 0
