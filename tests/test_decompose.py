"""Spatial decomposition: blocks with halos give the undivided result, serially and as Dask tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trajden import decompose, names
from trajden.denoise import denoise
from trajden.io.readers import Trajectory
from trajden.lattices import add_noise, make_crystal
from trajden.model.package import load_model

GB_LIQUID = Path(__file__).parent / "data" / "md" / "cu_gb_liquid.dump"


@pytest.fixture(scope="module")
def model():
    return load_model("fcc-bcc-hcp")


@pytest.fixture(scope="module")
def gb_liquid_frame():
    """Real MD (LAMMPS, Mishin Cu, 0.9 Tm): two Sigma5 grain boundaries and a molten slab."""
    return Trajectory(str(GB_LIQUID)).frame(0)


def _min_image(d, cell):
    f = d @ np.linalg.inv(cell)
    return (f - np.round(f)) @ cell


def test_plan_owns_every_atom_once_and_halos_cover_the_receptive_field():
    rng = np.random.default_rng(3)
    cell = np.array([[30.0, 0, 0], [4.0, 28.0, 0], [2.0, 3.0, 32.0]])  # triclinic
    pos = rng.random((3000, 3)) @ cell + rng.normal(0, 0.5, (3000, 3))  # some atoms outside the cell
    halo = 4.0
    p = decompose.plan(pos, cell, (3, 2, 1), halo)
    owned = np.concatenate([b.atoms[: b.n_owned] for b in p.blocks])
    assert np.array_equal(np.sort(owned), np.arange(len(pos)))
    for b in p.blocks:
        local = pos[b.atoms] + b.shift
        assert len(np.unique(b.atoms)) == len(b.atoms)  # each atom once per block
        own = local[: b.n_owned]
        # every atom (any image) within the halo of an owned atom is in the block, at that image
        sample = own[rng.choice(len(own), 40, replace=False)]
        for r in sample:
            d = _min_image(pos - r, cell)
            near = np.flatnonzero(np.linalg.norm(d, axis=1) < halo)
            idx = {a: k for k, a in enumerate(b.atoms)}
            assert all(a in idx for a in near)
            got = np.array([local[idx[a]] - r for a in near])
            # along split axes (x, y) the block holds the nearest image; the unsplit z stays periodic
            off = (got - d[near]) @ np.linalg.inv(cell)
            assert np.allclose(off[:, :2], 0.0, atol=1e-9)
            assert np.allclose(off[:, 2], np.round(off[:, 2]), atol=1e-9)
        # the block's own cell: along split axes it never meets its own image within a halo (no pair twice),
        # and it is not much longer than that (the neighbour list bins the block, not 3x the frame)
        frac = local @ np.linalg.inv(b.cell)
        room = (1.0 - np.ptp(frac[:, :2], axis=0)) * decompose.heights(b.cell)[:2]
        assert np.all(room >= halo) and np.all(room < 2.5 * halo)


def test_counts_too_thin_for_the_halo_are_refused():
    cell = np.diag([40.0, 40.0, 20.0])
    with pytest.raises(ValueError, match="axis z"):
        decompose.check_counts((2, 2, 2), cell, 8.0)
    assert decompose.check_counts((2, 2, 1), cell, 8.0) == (2, 2, 1)
    assert decompose.auto_counts(1000, cell, 8.0, atoms_per_block=5000) == (1, 1, 1)
    counts = decompose.auto_counts(20000, cell, 8.0, atoms_per_block=5000)
    assert np.prod(counts) >= 4 and counts[2] == 1


@pytest.mark.parametrize(("blocks", "tol"), [((4, 1, 1), 0.0), ((5, 1, 1), None), ("auto", None)])
def test_decomposed_equals_undivided_on_grain_boundaries_and_liquid(model, gb_liquid_frame, blocks, tol,
                                                                    monkeypatch):
    f = gb_liquid_frame
    if blocks == "auto":
        monkeypatch.setattr("trajden.denoise.AUTO_BLOCK_ATOMS", 1000)
    whole = denoise(f.positions, f.cell, f.types, model, tol=tol)
    split = denoise(f.positions, f.cell, f.types, model, tol=tol, blocks=blocks)
    assert whole.status == split.status and whole.status != names.FRAME_STATUS_DIVERGED
    assert whole.iterations == split.iterations
    assert split.scale == pytest.approx(whole.scale, rel=1e-5)  # refined from positions equal to float32 rounding
    np.testing.assert_allclose(split.rms_history, whole.rms_history, rtol=1e-4)
    assert np.abs(split.positions - whole.positions).max() < 1e-4  # angstrom; atoms moved up to ~1 A
    assert np.abs(whole.positions - f.positions).max() > 0.3


def test_decomposed_on_a_dask_client_equals_serial(model, gb_liquid_frame):
    distributed = pytest.importorskip("distributed")
    f = gb_liquid_frame
    serial = denoise(f.positions, f.cell, f.types, model, blocks=(3, 1, 1))
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        dist = denoise(f.positions, f.cell, f.types, model, blocks=(3, 1, 1), client=client)
    assert dist.iterations == serial.iterations and dist.status == serial.status
    assert np.abs(dist.positions - serial.positions).max() < 1e-5


def test_decomposed_keeps_bad_frames_flagged(model):
    """A frame that the undivided run flags as diverged is flagged the same way when split."""
    c = make_crystal("fcc", reps=(12, 12, 12), d_nn=2.556)
    pos, _ = add_noise(c.positions, 0.1 * 2.556, np.random.default_rng(1))
    pos[1] = pos[0] + 0.2  # two atoms 0.35 A apart
    whole = denoise(pos, c.cell, None, model, scale=2.556)
    split = denoise(pos, c.cell, None, model, scale=2.556, blocks=(3, 1, 1))
    assert whole.status == split.status
    assert np.abs(split.positions - whole.positions).max() < 1e-4


def test_block_graphs_are_cached_within_an_edge_budget(monkeypatch):
    """Blocks visited in turn keep hitting the graphs that fit the budget (an LRU cache smaller than the
    cycle would miss every time); a new frame's graphs push out the old frame's."""
    c = make_crystal("fcc", reps=(3, 3, 3))
    built = []

    def counting_build(*args, **kwargs):
        built.append(1)
        return real_build(*args, **kwargs)

    real_build = decompose.build_graph
    monkeypatch.setattr(decompose, "build_graph", counting_build)
    monkeypatch.setattr(decompose, "_GRAPHS", type(decompose._GRAPHS)())
    one = real_build(c.positions, c.cell, 1.5, 0.2).src.numel()
    monkeypatch.setattr(decompose, "GRAPH_CACHE_EDGES", 2 * one)  # room for two of three blocks

    def visit(token, version=0):
        for b in range(3):
            decompose._graph((token, version, b), c.positions, c.cell, 1.5, 0.2, "cpu")

    visit("frame-a")
    assert len(built) == 3
    visit("frame-a")
    visit("frame-a")
    assert len(built) == 5  # only the block that did not fit is rebuilt, once per visit
    assert set(decompose._GRAPHS) == {("frame-a", 0, 0), ("frame-a", 0, 1)}
    visit("frame-b")  # a new frame: the old frame's graphs make room
    assert set(decompose._GRAPHS) == {("frame-b", 0, 0), ("frame-b", 0, 1)}
    visit("frame-b", version=1)  # a new plan of the same frame replaces the stale lists
    assert set(decompose._GRAPHS) == {("frame-b", 1, 0), ("frame-b", 1, 1)}
