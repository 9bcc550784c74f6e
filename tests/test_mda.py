"""trajden.mda.Denoise: MDAnalysis' serial, multiprocessing and dask backends give identical results."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np
import pytest

os.environ.setdefault("OVITO_THREAD_COUNT", "1")

import MDAnalysis as mda  # noqa: E402

from trajden import names  # noqa: E402
from trajden.mda import Denoise  # noqa: E402

MODEL, K = "fcc-bcc-hcp-lite", 2
STEP = 8  # frames 0, 8, 16, 24 of 25


@pytest.fixture(scope="module")
def universe():
    path = str(resources.files("trajden.data").joinpath("cu_solidification.dump"))
    return mda.Universe(path, format="LAMMPSDUMP")


@pytest.fixture(scope="module")
def serial(universe):
    return Denoise(universe.atoms, model=MODEL, iterations=K, raw_labels=True).run(step=STEP)


def _same(a, b):
    for k in ("positions", "displacement", "iterations", "residual", "scale", "status"):
        assert np.array_equal(a.results[k], b.results[k]), k
    for k in ("labels", "labels_raw", "fractions", "fractions_raw"):
        assert sorted(a.results[k]) == sorted(b.results[k])
        for c in a.results[k]:
            assert np.array_equal(a.results[k][c], b.results[k][c]), (k, c)
    assert np.array_equal(a.frames, b.frames)


def test_serial_results(serial, universe):
    r = serial.results
    n = len(universe.atoms)
    assert r.positions.shape == (4, n, 3) and r.labels[names.PTM].shape == (4, n)
    assert list(serial.frames) == [0, 8, 16, 24]
    np.testing.assert_allclose(r.fractions[names.PTM].sum(axis=1), 1.0)
    assert r.structures == list(names.STRUCTURE_NAMES.values())
    # denoising moved the atoms and raised the crystalline fraction of the solidified frame
    assert r.displacement.max() > 0.1
    assert r.fractions[names.PTM][-1, names.FCC] > r.fractions_raw[names.PTM][-1, names.FCC] + 0.05
    assert set(np.unique(r.status)) <= set(names.FRAME_STATUS_NAMES)


@pytest.mark.parametrize("backend", ["multiprocessing", "dask"])
def test_parallel_backends_equal_serial(serial, universe, backend):
    assert backend in Denoise.get_supported_backends()
    par = Denoise(universe.atoms, model=MODEL, iterations=K, raw_labels=True).run(step=STEP, backend=backend,
                                                                                   n_workers=2)
    _same(serial, par)


def test_atomgroup_order(serial, universe):
    rev = universe.atoms[::-1]
    d = Denoise(rev, model=MODEL, iterations=K, classifiers=(names.PTM,)).run(stop=1)
    np.testing.assert_allclose(d.results.positions[0], serial.results.positions[0][::-1], rtol=0, atol=1e-5)
    assert np.array_equal(d.results.labels[names.PTM][0], serial.results.labels[names.PTM][0][::-1])


def test_unknown_classifier(universe):
    with pytest.raises(ValueError, match="unknown classifier"):
        Denoise(universe.atoms, classifiers=("cna",))
