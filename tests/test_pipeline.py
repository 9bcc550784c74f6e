"""trajden process: serial, LocalCluster and resumed runs write identical stores; xarray reads them back."""

import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from trajden import names
from trajden.analysis import phase_fractions
from trajden.io.readers import Trajectory
from trajden.pipeline import ProcessSettings, run
from trajden.store import Store

SETTINGS = ProcessSettings(model="fcc-bcc-hcp", iterations=6)


def _open(path):
    return xr.open_zarr(path, consolidated=False)


def _assert_same_store(a, b):
    da, db = _open(a), _open(b)
    for var in da.data_vars:
        np.testing.assert_array_equal(da[var].values, db[var].values, err_msg=var)
    for c in da.coords:
        np.testing.assert_array_equal(da[c].values, db[c].values)


@pytest.fixture(scope="module")
def serial_store(hot_fcc_dump, tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "serial.zarr"
    summary = run(Trajectory(str(hot_fcc_dump)), list(range(4)), str(out), SETTINGS, progress=False)
    assert summary.frames_done == 4 and not summary.failures
    return out


def test_store_contents(serial_store):
    ds = _open(serial_store)
    assert ds.sizes == {"frame": 4, "atom": 500, "spatial": 3, "cell_vector": 3, "iteration": 6}
    assert ds[names.VAR_COMPLETE].values.all()
    assert ds[names.VAR_POSITIONS].dtype == np.float32 and ds[names.structure_var("acna")].dtype == np.int8
    assert ds.attrs[names.ATTR_MODEL] == "fcc-bcc-hcp" and len(ds.attrs[names.ATTR_MODEL_SHA256]) == 64
    np.testing.assert_array_equal(ds[names.COORD_STEP].values, [0, 100, 200, 300])
    acna = ds[names.structure_var("acna")].values
    acna_raw = ds[names.structure_var("acna", raw=True)].values
    crystal = [0, 1, 3]
    assert (acna[crystal] == names.FCC).mean() > 0.99  # denoised crystal frames
    assert (acna_raw[crystal] == names.FCC).mean() < 0.9  # raw ones are blurred
    assert (acna[2] == names.OTHER).mean() > 0.9  # the disordered frame stays disordered
    assert float(ds[names.VAR_DISPLACEMENT][0].mean()) > 0.1
    # 500-atom frames take the bit-exact eager path (compiled layers are tried from 100k atoms on a CPU)
    assert (ds[names.VAR_EVALUATOR].values == names.EVALUATOR_EAGER).all()


def test_phase_fractions_of_every_frame(serial_store):
    ds = _open(serial_store)
    fr = phase_fractions(ds, method="acna").compute()
    np.testing.assert_allclose(fr.sum("structure").values, 1.0)
    direct = (ds[names.structure_var("acna")].values == names.FCC).mean(axis=1)
    np.testing.assert_allclose(fr.sel(structure="fcc").values, direct)


def test_local_cluster_equals_serial(serial_store, hot_fcc_dump, tmp_path):
    from trajden.cluster import close_cluster, start_cluster

    client, cluster = start_cluster("local", n_workers=2, model=SETTINGS.model, torch_threads=1, ovito_threads=1,
                                    dashboard_address=None)
    try:
        out = tmp_path / "dist.zarr"
        summary = run(Trajectory(str(hot_fcc_dump)), list(range(4)), str(out), SETTINGS, client=client,
                      progress=False)
    finally:
        close_cluster(client, cluster)
    assert summary.frames_done == 4
    _assert_same_store(serial_store, out)


def test_resume_after_kill(serial_store, hot_fcc_dump, tmp_path):
    """kill -9 the CLI once a frame is complete; the re-run finishes and equals the uninterrupted store."""
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "trajden.cli", "process", str(hot_fcc_dump), "--out", str(out), "--serial",
           "--iterations", "6", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if Store.open(out, mode="r").completed().sum() >= 1:
                break
        except Exception:  # noqa: BLE001 - store not created yet
            pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    done_before = Store.open(out, mode="r").completed().sum()
    assert done_before < 4, "the run finished before it could be interrupted"
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    _assert_same_store(serial_store, out)


def test_slurm_dry_run_prints_job_script(hot_fcc_dump):
    r = subprocess.run([sys.executable, "-m", "trajden.cli", "process", str(hot_fcc_dump), "--out", "x.zarr",
                        "--cluster", "slurm", "--cluster-config", "cluster_configs/slurm-gpu.yaml", "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH" in r.stdout and "gpu" in r.stdout


def test_blocked_frames_on_a_local_cluster_equal_the_serial_undivided_run(tmp_path):
    """Each frame of the grain-boundary + liquid fixture split into 4 blocks, the blocks run as Dask tasks."""
    from pathlib import Path

    from trajden.cluster import close_cluster, start_cluster

    dump = str(Path(__file__).parent / "data" / "md" / "cu_gb_liquid.dump")
    whole = tmp_path / "whole.zarr"
    run(Trajectory(dump), [0, 1], str(whole), SETTINGS, progress=False)
    blocked = ProcessSettings(model="fcc-bcc-hcp", iterations=6, blocks=(4, 1, 1))
    client, cluster = start_cluster("local", n_workers=2, model=SETTINGS.model, torch_threads=1, ovito_threads=1,
                                    dashboard_address=None)
    try:
        from distributed import get_task_stream

        out = tmp_path / "blocked.zarr"
        with get_task_stream(client) as ts:
            summary = run(Trajectory(dump), [0, 1], str(out), blocked, client=client, progress=False)
        block_tasks = [t for t in ts.data if str(t["key"]).startswith("block_update")]
        assert len(block_tasks) >= 2 * 4 * 2  # 2 frames x 4 blocks x >= 2 iterations, as separate tasks
        assert len({t["worker"] for t in block_tasks}) == 2  # spread over both workers
    finally:
        close_cluster(client, cluster)
    assert summary.frames_done == 2 and not summary.failures
    a, b = _open(whole), _open(out)
    assert (b[names.VAR_EVALUATOR].values == names.EVALUATOR_EAGER).all()  # the workers' blocks report it
    pos = names.VAR_POSITIONS
    assert float(np.abs(a[pos].values - b[pos].values).max()) < 1e-4
    for c in names.CLASSIFIERS:
        var = names.structure_var(c)
        # labels of the same positions to float32 rounding: at most a borderline atom may differ
        assert (a[var].values != b[var].values).mean() < 1e-3
    np.testing.assert_array_equal(a[names.VAR_ITERATIONS].values, b[names.VAR_ITERATIONS].values)


def test_run_tells_each_frame_its_workers_share_of_the_run(hot_fcc_dump, tmp_path, monkeypatch):
    """:func:`run` passes the frames per worker to the denoiser (a long run of smaller frames asks for the
    compiled layers: :func:`trajden.decompose.compile_request`); the stored result does not depend on it."""
    import trajden.pipeline as pipeline

    seen = []
    real = pipeline.denoise

    def spy(*args, **kwargs):
        seen.append(kwargs["frames_per_worker"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "denoise", spy)
    run(Trajectory(str(hot_fcc_dump)), list(range(3)), str(tmp_path / "a.zarr"), SETTINGS, progress=False)
    assert seen == [3, 3, 3]  # serial: one worker takes all pending frames
    assert "frames_per_worker" not in SETTINGS.run_config()


def test_liquid_frames_are_not_reported_as_failures(tmp_path, capsys):
    """A melt that reaches k is the expected outcome: the summary says how much still moved, names no problem,
    and the run succeeds; the store keeps the reason (status) and the mobile fraction per frame."""
    from pathlib import Path

    from trajden.cli import main

    melt = Path(__file__).parent / "data" / "md" / "cu_liquid.dump"
    out = tmp_path / "melt.zarr"
    rc = main(["process", str(melt), "--out", str(out), "--frames", "0:2", "-k", "2", "--serial", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "denoising  0 converged, 2 stopped at k = 2 with atoms still moving (" in text
    assert "expected where liquid" in text
    assert "problems" not in text and "FAILED" not in text and "not_converged" not in text
    ds = xr.open_zarr(out, consolidated=False)
    assert (ds[names.VAR_STATUS].values == names.FRAME_STATUS_MAX_ITERATIONS).all()
    assert (ds[names.VAR_MOBILE_FRACTION].values > 0.5).all()
    assert ds[names.VAR_STATUS].attrs[names.CF_FLAG_MEANINGS].split()[1] == "max_iterations"


def test_frame_failing_mid_run_is_honest_and_resumable(hot_fcc_dump, tmp_path, monkeypatch, capsys):
    """A frame whose task raises keeps status 'failed', is not complete and holds no result; fractions and
    plot skip / mark it; the store's status reads with xarray alone; re-running processes just that frame."""
    from trajden import cli, pipeline
    from trajden.plotting import plot_fractions

    fast = ProcessSettings(model="fcc-bcc-hcp-lite", iterations=2)
    real = pipeline.process_frame

    def crash_on_frame_2(frame, settings, model=None):
        if frame.index == 2:
            raise RuntimeError("simulated crash in the middle of the run")
        return real(frame, settings, model)

    monkeypatch.setattr(pipeline, "process_frame", crash_on_frame_2)
    out = tmp_path / "s.zarr"
    traj = Trajectory(str(hot_fcc_dump))
    summary = run(traj, list(range(4)), str(out), fast, progress=False)
    assert set(summary.failures) == {2} and "simulated crash" in summary.failures[2]
    assert summary.statuses[2] == names.FRAME_STATUS_FAILED and 2 not in summary.retryable

    ds = xr.open_zarr(out, consolidated=False)  # xarray alone: the status is a CF flag variable
    status = ds[names.VAR_STATUS]
    meanings = dict(zip(np.atleast_1d(status.attrs[names.CF_FLAG_VALUES]).tolist(),
                        status.attrs[names.CF_FLAG_MEANINGS].split()))
    assert [meanings.get(int(c), "not written") for c in status.values][2] == "failed"
    assert ds[names.VAR_COMPLETE].values.tolist() == [True, True, False, True]
    assert np.isnan(ds[names.VAR_POSITIONS].values[2]).all()  # no positions presented as a result
    fr = phase_fractions(ds, method="ptm").values
    assert np.isnan(fr[2]).all() and np.isfinite(fr[[0, 1, 3]]).all()

    assert cli.main(["fractions", str(out), "--method", "ptm", "--all"]) == 0
    printed = capsys.readouterr().out
    assert "(failed)" in printed and "nan" not in printed.lower()
    assert cli.main(["fractions", str(out), "--method", "ptm"]) == 0
    assert "1 frame(s) without a result skipped: 2 (failed)" in capsys.readouterr().out
    plot_fractions(ds, tmp_path / "f.png", method="ptm")  # draws, marking frame 2 instead of a value

    monkeypatch.undo()
    again = run(traj, list(range(4)), str(out), fast, progress=False)
    assert again.frames_done == 1 and again.frames_skipped == 3 and not again.failures
    ds = xr.open_zarr(out, consolidated=False)
    assert ds[names.VAR_COMPLETE].values.all()
    # frame 2 is an ideal gas (the fixture): no length scale, left raw and flagged out of scope, not a failure
    assert np.isin(ds[names.VAR_STATUS].values, [names.FRAME_STATUS_OK, names.FRAME_STATUS_NOT_CONVERGED,
                                                 names.FRAME_STATUS_DIVERGED, names.FRAME_STATUS_OUT_OF_SCOPE]).all()


def test_slab_with_free_surfaces_end_to_end(tmp_path):
    """``pp pp ff``: read, denoised and labelled without images across z; the free surfaces are not pulled into
    the bulk lattice (as they are when the same positions are declared periodic, across a 0.9 A gap)."""
    from trajden.io.lammps_dump import LammpsDump, format_frame
    from trajden.lattices import make_crystal

    c = make_crystal("fcc", reps=(6, 6, 6), d_nn=2.55)
    pos = c.positions + np.random.default_rng(0).normal(0, 0.1, c.positions.shape)
    cell = c.cell.copy()
    cell[2, 2] += 0.9  # a thin gap: periodic images of the other surface would sit close
    z = pos[:, 2]
    surface = (z < 1.0) | (z > z.max() - 1.0)
    fcc = {}
    for flags in ("pp pp pp", "pp pp ff"):
        src = tmp_path / f"{flags[-2:]}.dump"
        src.write_text(format_frame(pos, cell, np.zeros(3)).replace("BOX BOUNDS pp pp pp", f"BOX BOUNDS {flags}"))
        out = tmp_path / f"{flags[-2:]}.zarr"
        r = subprocess.run([sys.executable, "-m", "trajden.cli", "process", src, "--out", out, "--serial", "--model",
                            "fcc-bcc-hcp-lite", "--iterations", "4", "--scale", "2.55", "--quiet", "--keep-raw",
                            "--torch-threads", "1"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        ds = _open(out)
        assert ds[names.VAR_COMPLETE].values.all()
        assert ds[names.VAR_PBC].values.tolist() == [[1, 1, int(flags == "pp pp pp")]]
        assert np.isfinite(ds[names.VAR_POSITIONS].values).all()
        fcc[flags] = {raw: (ds[names.structure_var("acna", raw)].values[0] == names.FCC) for raw in (True, False)}
        exported = tmp_path / f"{flags[-2:]}.out.dump"
        r = subprocess.run([sys.executable, "-m", "trajden.cli", "export", out, "--out", exported], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        assert f"ITEM: BOX BOUNDS {flags}\n" in exported.read_text()
        np.testing.assert_array_equal(LammpsDump(str(exported)).read(0).cell, LammpsDump(str(src)).read(0).cell)
    free, periodic = fcc["pp pp ff"], fcc["pp pp pp"]
    assert free[True][surface].mean() < 0.05 and free[False][surface].mean() < 0.2  # surfaces stay surfaces
    assert free[False][~surface].mean() > 0.7  # the interior is still found
    assert periodic[False][surface].mean() > 0.8  # ... whereas images across the gap make the surface bulk
