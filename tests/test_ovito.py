"""trajden.ovito.DenoiseModifier in a plain ``ovito`` pipeline equals ``trajden process --serial``."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np
import pytest

os.environ.setdefault("OVITO_THREAD_COUNT", "1")

from ovito.io import import_file  # noqa: E402
from ovito.modifiers import (  # noqa: E402
    CommonNeighborAnalysisModifier,
    ComputePropertyModifier,
    PolyhedralTemplateMatchingModifier,
)

from trajden import names  # noqa: E402
from trajden.cli import main  # noqa: E402
from trajden.ovito import DenoiseModifier  # noqa: E402

FRAMES = [12, 18, 24]  # melt, mixed, mostly solid
MODEL, K = "fcc-bcc-hcp-lite", 3


def _dump() -> str:
    return str(resources.files("trajden.data").joinpath("cu_solidification.dump"))


def _ptm():
    """OVITO's PTM with the structures trajden enables (trajden.classify.ptm)."""
    ptm = PolyhedralTemplateMatchingModifier(rmsd_cutoff=0.1)
    on = {ptm.Type.FCC, ptm.Type.HCP, ptm.Type.BCC, ptm.Type.SC, ptm.Type.CUBIC_DIAMOND, ptm.Type.HEX_DIAMOND}
    for s in ptm.structures:
        if s.id != ptm.Type.OTHER:
            s.enabled = s.id in on
    return ptm


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import xarray as xr

    out = tmp_path_factory.mktemp("ovito") / "run.zarr"
    rc = main(["process", _dump(), "--out", str(out), "--serial", "--quiet", "--model", MODEL, "--iterations",
               str(K), "--frames", f"{FRAMES[0]}:{FRAMES[-1] + 1}:{FRAMES[1] - FRAMES[0]}", "--torch-threads", "1"])
    assert rc == 0
    return xr.open_zarr(out, consolidated=False).load()


def test_modifier_equals_process(store):
    pipeline = import_file(_dump())
    pipeline.modifiers.append(DenoiseModifier(model=MODEL, iterations=K))
    pipeline.modifiers.append(_ptm())
    # keep PTM's labels: the a-CNA that follows writes "Structure Type" again
    pipeline.modifiers.append(ComputePropertyModifier(output_property="PTM Type", expressions=["StructureType"]))
    pipeline.modifiers.append(CommonNeighborAnalysisModifier(mode=CommonNeighborAnalysisModifier.Mode.AdaptiveCutoff))
    ids = store[names.COORD_ATOM_ID].values
    for j, f in enumerate(FRAMES):
        data = pipeline.compute(f)
        order = np.argsort(data.particles.identifiers[...])
        assert np.array_equal(np.asarray(data.particles.identifiers[...])[order], ids)
        pos = np.asarray(data.particles.positions[...])[order]
        raw = np.asarray(data.particles[names.OVITO_RAW_POSITION][...])[order]
        # float32 in the store: the modifier's float64 positions round to exactly the stored values
        np.testing.assert_array_equal(pos.astype(np.float32), store[names.VAR_POSITIONS].values[j])
        np.testing.assert_allclose(np.asarray(data.particles[names.OVITO_DISPLACEMENT][...])[order],
                                   store[names.VAR_DISPLACEMENT].values[j], rtol=0, atol=1e-5)
        assert not np.allclose(raw, pos)
        # OVITO's own PTM / a-CNA after the modifier see the denoised frame: the store's denoised labels
        ptm = np.asarray(data.particles["PTM Type"][...])[order]
        assert np.array_equal(ptm, store[names.structure_var(names.PTM)].values[j])
        acna = np.asarray(data.particles["Structure Type"][...])[order]
        assert np.array_equal(acna, store[names.structure_var(names.ACNA)].values[j])
        assert data.attributes[names.OVITO_ATTR_PREFIX + "iterations"] == int(store[names.VAR_ITERATIONS][j])
        assert data.attributes[names.OVITO_ATTR_PREFIX + "status"] == int(store[names.VAR_STATUS][j])
        assert data.attributes[names.OVITO_ATTR_PREFIX + "residual"] == pytest.approx(
            float(store[names.VAR_RESIDUAL][j]), rel=1e-6)
        assert len(data.tables["denoising-convergence"].y) == data.attributes[names.OVITO_ATTR_PREFIX + "iterations"]
    # the frames differ: the comparison is not of one frame with itself
    assert len({int((store[names.structure_var(names.PTM)].values[j] == names.FCC).sum()) for j in range(3)}) == 3


def test_model_loaded_once(monkeypatch):
    from trajden import cluster
    from trajden.model import package

    cluster.clear_model_cache()
    calls = []
    real = package.load_model
    monkeypatch.setattr(package, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    pipeline = import_file(_dump())
    pipeline.modifiers.append(DenoiseModifier(model=MODEL, iterations=1, device="cpu"))
    for f in (0, 1):
        pipeline.compute(f)
    assert len(calls) == 1


def test_only_selected_moves_the_selection_as_the_whole_frame():
    from ovito.modifiers import ExpressionSelectionModifier

    centre = "(Position.X-20)^2+(Position.Y-20)^2+(Position.Z-20)^2 < 36"
    whole = import_file(_dump())
    whole.modifiers.append(DenoiseModifier(model=MODEL, iterations=1, tolerance=0.0))
    part = import_file(_dump())
    part.modifiers.append(ExpressionSelectionModifier(expression=centre))
    part.modifiers.append(DenoiseModifier(model=MODEL, iterations=1, tolerance=0.0, only_selected=True))
    a, b = whole.compute(24), part.compute(24)
    sel = np.asarray(b.particles["Selection"][...]) != 0
    assert 50 < sel.sum() < 0.5 * len(sel)
    raw = np.asarray(b.particles[names.OVITO_RAW_POSITION][...])
    pos_b, pos_a = np.asarray(b.particles.positions[...]), np.asarray(a.particles.positions[...])
    np.testing.assert_array_equal(pos_b[~sel], raw[~sel])
    np.testing.assert_allclose(pos_b[sel], pos_a[sel], rtol=0, atol=2e-5)
    assert np.abs(pos_b[sel] - raw[sel]).max() > 0.05


def test_slab_with_a_free_surface_equals_denoise():
    """A ``pp pp ff`` cell: no images along z, the surface atoms held (flagged free_surface), and the positions
    those of :func:`trajden.denoise.denoise` with the same periodic flags."""
    from ovito.pipeline import Pipeline, PythonSource

    from trajden.cluster import get_model
    from trajden.denoise import denoise
    from trajden.lattices import make_crystal

    c = make_crystal("fcc", reps=(5, 5, 5), d_nn=2.55)
    pos = c.positions + np.random.default_rng(0).normal(0.0, 0.2, c.positions.shape)
    cell = c.cell.copy()
    cell[2, 2] += 0.5  # images across z would sit close: they must not be made

    def source(frame, data):
        from ovito.data import Particles, SimulationCell

        data.objects.append(SimulationCell(pbc=(True, True, False)))
        data.cell_[...] = np.column_stack([cell.T, np.zeros(3)])
        p = Particles(count=len(pos))
        p.create_property("Position", data=pos)
        data.objects.append(p)

    pipeline = Pipeline(source=PythonSource(function=source))
    pipeline.modifiers.append(DenoiseModifier(model=MODEL, iterations=K))
    data = pipeline.compute()
    ref = denoise(pos, cell, None, get_model(MODEL), k=K, pbc=(True, True, False))
    np.testing.assert_allclose(np.asarray(data.particles.positions[...]), ref.positions, rtol=0, atol=1e-6)
    scope = np.asarray(data.particles[names.OVITO_SCOPE][...])
    np.testing.assert_array_equal(scope, ref.scope)
    held = scope == names.SCOPE_SURFACE
    z = pos[:, 2]
    assert held[(z < 1.0) | (z > z.max() - 1.0)].all() and not held.all()
    np.testing.assert_array_equal(np.asarray(data.particles.positions[...])[held], pos[held])
