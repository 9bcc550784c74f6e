"""trajden.model.aot: layers compiled ahead of time, cached per machine, equal to the eager ones."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trajden import names
from trajden.lattices import add_noise, make_crystal
from trajden.model import aot
from trajden.model.options import EvaluatorOptions
from trajden.model.package import load_model
from trajden.train import TrainConfig, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small two-layer model (quick to compile) trained for a few steps."""
    d = tmp_path_factory.mktemp("aot")
    cfg = TrainConfig(name="tiny", structures=["fcc", "bcc"], hidden="4x0e+2x1o", n_layers=2, atoms_per_cell=54,
                      steps=4, val_every=4, checkpoint_every=4, lr=5e-3, val_sigmas=[0.1])
    train(cfg, d / "tiny.pt", log=lambda *_: None)
    return d / "tiny.pt"


def _frame():
    c = make_crystal("fcc", 2000)
    pos, _ = add_noise(c.positions, 0.06, np.random.default_rng(3))
    return pos, c.cell


def test_cache_dir_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert aot.cache_dir("auto") == tmp_path / "trajden" / "aot"
    assert aot.cache_dir("off") is None and aot.cache_dir(None) is None
    assert aot.cache_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert EvaluatorOptions.from_config({"aot-cache": "off"}).aot_cache == "off"


def test_built_once_then_loaded_and_equal_to_eager(tiny, tmp_path):
    from trajden.decompose import evaluator
    from trajden.denoise import denoise

    cache = tmp_path / "cache"
    pos, cell = _frame()
    m = load_model(tiny)
    eager = denoise(pos, cell, None, m, options=EvaluatorOptions(compile="off"))
    on = EvaluatorOptions(compile="on", aot_cache=str(cache))
    got = denoise(pos, cell, None, m, options=on)
    ev = evaluator(m, 4096, True, on)
    assert ev.aot_used and ev.mode == "fast+aot-layer"
    packages = sorted(cache.glob("*.pt2"))
    assert len(packages) == 2  # one per layer, each with its key beside it
    key = json.loads(packages[0].with_suffix(".json").read_text())
    assert key["model_sha256"] == m.sha256 and key["torch"] == torch.__version__
    assert key["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got.iterations == eager.iterations
    np.testing.assert_allclose(got.positions, eager.positions, atol=1e-4)
    assert got.evaluator == names.EVALUATOR_COMPILED and eager.evaluator == names.EVALUATOR_EAGER
    built = {p: p.stat().st_mtime_ns for p in packages}

    # a new process with compile "auto" and a small frame: the cached packages are loaded, not rebuilt, and
    # run (no compile penalty, so no size threshold)
    code = (
        "import numpy as np, json, sys; from trajden.model.package import load_model; "
        "from trajden.model.options import EvaluatorOptions; from trajden.denoise import denoise; "
        "from trajden.decompose import evaluator; "
        "from trajden.lattices import add_noise, make_crystal; c = make_crystal('fcc', 2000); "
        "pos, _ = add_noise(c.positions, 0.06, np.random.default_rng(3)); m = load_model(sys.argv[1]); "
        "o = EvaluatorOptions(compile='auto', aot_cache=sys.argv[2]); r = denoise(pos, c.cell, None, m, options=o); "
        "np.save(sys.argv[3], r.positions); "
        "print(json.dumps([ev.mode for ev in m._evaluators.values()]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tiny), str(cache), str(tmp_path / "p.npy")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    modes = json.loads(out.stdout.strip().splitlines()[-1])
    assert "fast+aot-layer" in modes or modes == ["fast"]  # "fast": the probe found eager faster on this machine
    assert {p: p.stat().st_mtime_ns for p in packages} == built  # loaded, not rebuilt
    probes = list(cache.glob("probe-*.json"))  # compiled vs eager timed once per machine, kept for later runs
    assert len(probes) == 1 and set(json.loads(probes[0].read_text())["times"]) == {"eager", "compiled"}
    threads = torch.get_num_threads()
    torch.set_num_threads(json.loads(probes[0].read_text())["threads"])  # the key includes the thread count
    try:
        aot.probe_times(cache, m.sha256, lambda: pytest.fail("measured again"))  # read back, not re-measured
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), eager.positions, atol=1e-4)


def test_not_built_without_a_request_and_keyed_by_model(tiny, tmp_path):
    from trajden.decompose import evaluator

    m = load_model(tiny)
    base = evaluator(m, 4096, None, EvaluatorOptions(compile="off"))
    args = (base.tensor_products, base.radial_tables, base.inv_sqrt_nb)
    assert not aot.cached(*args, m.sha256, tmp_path)
    assert aot.aot_layers(*args, m.sha256, tmp_path, build=False) is None
    assert not list(tmp_path.iterdir())
    # compile "auto" with an empty cache builds nothing: not on a small frame (eager), nor where a large one
    # asks for compiled code (torch.compile in the process, as without a cache)
    ev = evaluator(m, 4096, None, EvaluatorOptions(compile="auto", aot_cache=str(tmp_path)))
    assert not ev.compiled and not list(tmp_path.iterdir())
    ev = evaluator(m, 4096, "auto", EvaluatorOptions(compile="auto", aot_cache=str(tmp_path)))
    assert not ev.aot_used and not list(tmp_path.glob("*.pt2"))
    assert aot.package_key("a" * 64, 0, base.radial_tables[0], 0.25) != aot.package_key(
        "b" * 64, 0, base.radial_tables[0], 0.25)


def test_models_compile_command(tiny, tmp_path):
    out = subprocess.run([sys.executable, "-m", "trajden.cli", "models", "--compile", str(tiny), "--aot-cache",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "compiled layers ready" in out.stdout and "ahead of time" in out.stderr
    assert len(list(tmp_path.glob("*.pt2"))) == 2
    off = subprocess.run([sys.executable, "-m", "trajden.cli", "models", "--compile", "--aot-cache", "off"],
                         capture_output=True, text=True)
    assert off.returncode != 0 and "Traceback" not in off.stderr and "--aot-cache off" in off.stderr


def test_cli_hints_at_compiling_once(hot_fcc_dump, tmp_path):
    import os

    cache = tmp_path / "cache"
    env = {**os.environ, "DASK_TRAJDEN__EVALUATOR__AOT_CACHE": str(cache)}

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "trajden.cli", "process", str(hot_fcc_dump), "--out",
                               str(tmp_path / "s.zarr"), "--overwrite", "--frames", "0:1", "-k", "1", *extra],
                              capture_output=True, text=True, env=env, timeout=600)

    hint = "layers not compiled for this machine; `trajden models --compile fcc-bcc-hcp` once"
    first = run()
    assert first.returncode == 0 and hint in first.stderr, first.stderr
    assert hint not in run("--quiet").stderr
    cache.mkdir()
    sha = load_model("fcc-bcc-hcp").sha256
    (cache / "x.json").write_text(json.dumps({"model_sha256": sha}))
    (cache / "x.pt2").write_bytes(b"")  # not a real package: its name is no key, so the run stays eager
    later = run()
    assert later.returncode == 0 and hint not in later.stderr, later.stderr
    assert aot.has_packages(cache, sha) and not aot.has_packages(cache, "0" * 64)
