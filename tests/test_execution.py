"""Where ``trajden process`` runs its frames (:mod:`trajden.execution`) and the evaluator options reaching the
evaluator from the command line (recorded in the store)."""

import json

import pytest
import xarray as xr

from trajden import execution, names


def test_small_inputs_run_serially():
    small = execution.SERIAL_MAX_ATOM_FRAMES - 1
    assert execution.choose_execution("auto", 1, 10**6, cores=16)[0] == "serial"  # one frame: one task anyway
    kind, reason = execution.choose_execution("auto", 1, small, cores=16)
    assert kind == "serial" and reason == "a single frame"
    kind, reason = execution.choose_execution("auto", 25, 5324, cores=16)  # make demo's frames
    assert kind == "serial" and "133100 atom-frames" in reason
    assert execution.choose_execution("auto", 100, 32_000, cores=1)[0] == "serial"
    assert execution.choose_execution("auto", 22, 32_000, cores=2)[0] == "local"  # 704k atom-frames
    assert execution.choose_execution("auto", 2, small, cores=2, explicit_dask=True)[0] == "local"
    for kind in ("serial", "local", "slurm"):  # an explicit choice stands
        assert execution.choose_execution(kind, 1, 10, cores=4)[0] == kind


def test_frames_per_chunk_batches_small_frames():
    assert execution.frames_per_chunk("auto", 25, 5324) == 3  # 19 by atoms, capped to keep 8 chunks
    assert execution.frames_per_chunk("auto", 1000, 5324) == 19  # ceil(100k / 5324)
    assert execution.frames_per_chunk("auto", 1000, 256_000) == 1
    assert execution.frames_per_chunk("auto", 3, 100) == 1
    assert execution.frames_per_chunk(None, 1000, 1000) == 100
    assert execution.frames_per_chunk("4", 3, 100) == 4
    with pytest.raises(ValueError, match="--frames-per-chunk"):
        execution.frames_per_chunk("0", 3, 100)


@pytest.fixture
def spy_evaluator(monkeypatch):
    """Record the arguments every new evaluator is built with (the model's cache is emptied first)."""
    import trajden.decompose as decompose

    calls = []
    real = decompose._evaluator

    def spy(model, block_edges, fused, compile=None, aggregate=None, aot_dir=None):
        model.__dict__.pop("_evaluators", None)
        calls.append({"fused": fused, "compile": compile, "aggregate": aggregate})
        return real(model, block_edges, fused, compile, aggregate, aot_dir)

    monkeypatch.setattr(decompose, "_evaluator", spy)
    return calls


def _no_cluster(*args, **kwargs):
    raise AssertionError("a small input started a Dask cluster")


def test_cli_options_reach_the_evaluator_and_the_store(hot_fcc_dump, tmp_path, monkeypatch, spy_evaluator, capsys):
    import trajden.cluster
    from trajden.cli import main

    monkeypatch.setattr(trajden.cluster, "start_cluster", _no_cluster)
    out = tmp_path / "s.zarr"
    rc = main(["process", str(hot_fcc_dump), "--out", str(out), "--frames", "0:2", "-k", "1",
               "--torch-threads", "1", "--compile", "off", "--no-fused", "--aggregate", "atomic"])
    assert rc == 0
    wanted = {"fused": False, "compile": False, "aggregate": "atomic"}
    assert spy_evaluator and all(c == wanted for c in spy_evaluator)
    ds = xr.open_zarr(out, consolidated=False)
    assert json.loads(ds.attrs[names.ATTR_EVALUATOR_OPTIONS]) == {"compile": "off", "fused": False,
                                                                  "aggregate": "atomic", "aot_cache": "off"}
    assert ds.attrs[names.ATTR_EXECUTION] == "serial"
    assert "small input: 2 frames x 500 atoms" in ds.attrs[names.ATTR_EXECUTION_REASON]
    assert "running in this process, no Dask cluster (small input" in capsys.readouterr().err
    assert (ds[names.VAR_EVALUATOR].values == names.EVALUATOR_EAGER).all()


def test_cli_defaults_and_cluster_config_file(hot_fcc_dump, tmp_path, monkeypatch, spy_evaluator):
    """Without options the packaged defaults apply (fused, compile as the frame asks: eager for small CPU
    frames); a --cluster-config file's trajden.evaluator keys apply below the command line's."""
    import yaml

    import trajden.cluster
    from trajden.cli import main

    for var in trajden.cluster.DEPRECATED_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(trajden.cluster, "start_cluster", _no_cluster)
    rc = main(["process", str(hot_fcc_dump), "--out", str(tmp_path / "a.zarr"), "--frames", "0:1", "-k", "1",
               "--quiet", "--torch-threads", "1"])
    assert rc == 0 and spy_evaluator[-1] == {"fused": True, "compile": None, "aggregate": None}
    a = xr.open_zarr(tmp_path / "a.zarr", consolidated=False)
    # (aot_cache: the packaged "auto", switched off by the tests' environment, tests/conftest.py)
    assert json.loads(a.attrs[names.ATTR_EVALUATOR_OPTIONS]) == {"compile": "auto", "fused": True, "aggregate": "auto",
                                                                 "aot_cache": "off"}
    assert a.attrs[names.ATTR_EXECUTION] == "serial" and a.attrs[names.ATTR_EXECUTION_REASON] == "a single frame"

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"trajden": {"evaluator": {"fused": False, "compile": "off"}}}))
    rc = main(["process", str(hot_fcc_dump), "--out", str(tmp_path / "b.zarr"), "--frames", "0:1", "-k", "1",
               "--quiet", "--torch-threads", "1", "--cluster-config", str(cfg), "--fused"])
    assert rc == 0 and spy_evaluator[-1] == {"fused": True, "compile": False, "aggregate": None}
    b = xr.open_zarr(tmp_path / "b.zarr", consolidated=False)
    assert json.loads(b.attrs[names.ATTR_EVALUATOR_OPTIONS]) == {"compile": "off", "fused": True, "aggregate": "auto",
                                                                 "aot_cache": "off"}
