"""End to end through the command line on the bundled example (real LAMMPS Cu solidification)."""

import csv
import subprocess
import sys
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
import xarray as xr

import trajden
from trajden import names

EXAMPLE = Path(trajden.__file__).parent / "data" / "cu_solidification.dump"


def trajden_cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "trajden.cli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"trajden {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}"
    return r


def test_help_and_version():
    assert "process" in trajden_cli("--help").stdout
    assert trajden.__version__ in trajden_cli("--version").stdout


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.zarr"
    r = trajden_cli("process", EXAMPLE, "--out", out, "--frames", "0:25:12", "--workers", "2", "--quiet",
                    "--keep-raw")
    assert "phase fractions" in r.stdout
    return out


def test_process_bundled_example(demo_store):
    ds = xr.open_zarr(demo_store, consolidated=False)
    assert ds.sizes["frame"] == 3 and ds.sizes["atom"] == 5324
    assert ds[names.VAR_COMPLETE].values.all()
    assert (ds[names.VAR_STATUS].values != names.FRAME_STATUS_FAILED).all()
    # denoising reveals crystal that the raw labels miss, but it does not crystallise the melt: frame 0 is a
    # 586-atom seed (11 %) in 4,738 liquid atoms; by frame 24 the small box has solidified (raw 71 % fcc)
    raw = (ds[names.structure_var("acna", raw=True)].values != names.OTHER).mean(axis=1)
    den = (ds[names.structure_var("acna")].values != names.OTHER).mean(axis=1)
    assert np.all(den > raw)
    assert den[0] < 0.3
    # the solid grows over the trajectory
    assert den[-1] > den[0]


def test_fractions_cli_and_csv_agree(demo_store, tmp_path):
    csv_path = tmp_path / "f.csv"
    out = trajden_cli("fractions", demo_store, "--method", "acna", "--all", "--csv", csv_path).stdout
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 3
    ds = xr.open_zarr(demo_store, consolidated=False)
    for i, row in enumerate(rows):
        direct = (ds[names.structure_var("acna")].values[i] == names.FCC).mean()
        assert float(row["acna_fcc"]) == pytest.approx(direct, abs=1e-6)
        line = [ln for ln in out.splitlines() if ln.strip().startswith(f"{i} ")][0]
        assert f"{100 * direct:.2f}" in line


def test_plots_render_and_export(demo_store, tmp_path):
    for args, name in ((("plot", demo_store), "fractions.png"), (("plot", demo_store, "--convergence"), "conv.png"),
                       (("export", demo_store, "--render"), "render.png")):
        trajden_cli(*args, "--out", tmp_path / name)
        assert (tmp_path / name).stat().st_size > 20_000
    dump = tmp_path / "denoised.dump"
    trajden_cli("export", demo_store, "--out", dump)
    ds = xr.open_zarr(demo_store, consolidated=False)
    u = mda.Universe(str(dump), format="LAMMPSDUMP", additional_columns=["structure_acna"])
    assert len(u.trajectory) == 3
    for i, ts in enumerate(u.trajectory):
        order = np.argsort(u.atoms.ids)
        # the export keeps the input's box origin (xlo, ylo, zlo), which MDAnalysis subtracts
        expected = ds[names.VAR_POSITIONS].values[i] - ds[names.VAR_ORIGIN].values[i]
        np.testing.assert_allclose(ts.positions[order], expected, atol=2e-3)
        np.testing.assert_array_equal(ts.data["structure_acna"][order], ds[names.structure_var("acna")].values[i])


def test_diagnostics_raw_vs_denoised(demo_store, tmp_path):
    trajden_cli("diagnostics", demo_store, "--csv", tmp_path / "d.csv")
    rows = list(csv.DictReader(open(tmp_path / "d.csv")))
    assert len(rows) == 3
    for row in rows:
        # denoised crystal environments are sharper: higher averaged q6 and a higher first g(r) peak
        assert float(row["q6_denoised"]) > float(row["q6_raw"])
        assert float(row["g_peak_denoised"]) > float(row["g_peak_raw"])


def test_vibration_average_baseline(tmp_path):
    out = tmp_path / "avg.zarr"
    trajden_cli("process", EXAMPLE, "--out", out, "--frames", "0:6", "--method", "average", "--window", "3",
                "--serial", "--quiet")
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.attrs[names.ATTR_METHOD] == "average"
    raw = (ds[names.structure_var("acna", raw=True)].values != names.OTHER).mean()
    avg = (ds[names.structure_var("acna")].values != names.OTHER).mean()
    assert avg > raw


@pytest.mark.parametrize("blocks", [["2", "x", "1"], ["2", "2"], ["0", "1", "1"]])
def test_bad_blocks_argument_is_one_clear_line(blocks, tmp_path):
    r = trajden_cli("process", EXAMPLE, "--out", tmp_path / "s.zarr", "--serial", "--blocks", *blocks, check=False)
    assert r.returncode != 0
    assert "--blocks" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.zarr").exists()


def test_blocks_too_thin_for_the_halo_fail_the_frame_clearly(tmp_path):
    """In the bundled 40 A box a block of half the box plus two 12 A halos is more than one period."""
    r = trajden_cli("process", EXAMPLE, "--out", tmp_path / "s.zarr", "--serial", "--frames", "0:1",
                    "--blocks", "2", "1", "1", "--quiet", check=False)
    assert r.returncode != 0
    assert "use fewer blocks along that axis" in r.stdout + r.stderr


@pytest.mark.parametrize("model", ["auto", "fcc-bcc-hcp-lite"])
def test_a_serial_run_loads_its_model_once(model, tmp_path, monkeypatch, capsys):
    """Start-up checks (types, species map, compile hint, store attributes) and the serial run share one load."""
    from trajden import cluster
    from trajden.cli import main
    from trajden.model import package

    cluster.clear_model_cache()
    calls = []
    real = package.load_model
    monkeypatch.setattr(package, "load_model", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rc = main(["process", str(EXAMPLE), "--out", str(tmp_path / "s.zarr"), "--frames", "24", "--serial",
               "--model", model, "--iterations", "1", "--torch-threads", "1"])
    assert rc == 0
    assert len(calls) == 1, calls
    cluster.clear_model_cache()
