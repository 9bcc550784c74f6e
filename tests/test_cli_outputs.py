"""What users read from ``trajden process`` / ``trajden fractions``: the progress line and the fractions CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from trajden import names
from trajden.cli import main


@pytest.fixture(scope="module")
def small_store(hot_fcc_dump, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs") / "run.zarr"
    assert main(["process", str(hot_fcc_dump), "--out", str(out), "--serial", "--quiet", "--model",
                 "fcc-bcc-hcp-lite", "--iterations", "2", "--torch-threads", "1"]) == 0
    return out


def test_fractions_csv_has_every_label_column(small_store, tmp_path):
    import xarray as xr

    path = tmp_path / "f.csv"
    assert main(["fractions", str(small_store), "--csv", str(path)]) == 0
    rows = list(csv.DictReader(open(path)))
    every = list(names.STRUCTURE_NAMES.values())
    header = ["frame", "step", "time_ps"] + [f"{m}_{s}" for m in names.CLASSIFIERS for s in every] + ["status"]
    assert list(rows[0]) == header
    ds = xr.open_zarr(small_store, consolidated=False)
    for i, row in enumerate(rows):
        for m in names.CLASSIFIERS:
            labels = ds[names.structure_var(m)].values[i]
            for code, s in names.STRUCTURE_NAMES.items():
                assert float(row[f"{m}_{s}"]) == pytest.approx(np.mean(labels == code), abs=1e-6)
            assert sum(float(row[f"{m}_{s}"]) for s in every) == pytest.approx(1.0, abs=1e-5)


def test_progress_shows_atoms_per_second_and_eta(hot_fcc_dump, tmp_path, capsys):
    assert main(["process", str(hot_fcc_dump), "--out", str(tmp_path / "p.zarr"), "--serial", "--model",
                 "fcc-bcc-hcp-lite", "--iterations", "1", "--frames", "0:2", "--torch-threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "atoms/s" in err and "ETA 00:00" in err and "2/2" in err
