"""Ahead-of-time compiled layers (``torch.export`` + AOTInductor), cached per machine.

``torch.compile`` makes a CPU's layers several times faster than the eager fused path, but each process pays
for it again (tracing and compiling three layers: 10-25 s on 2 cores, even with inductor's cache warm), which
small runs never repay. Here each layer's whole block, :meth:`trajden.model.fused.FusedTP.block`, is exported
once with dynamic atom, row, edge and slot counts, compiled by AOTInductor into a package (a shared library and
its weights), and kept in a per-machine cache directory; every later process, and every Dask worker, loads
the package in milliseconds and runs compiled code from its first frame. Packages are built only on request
(``trajden models --compile``, or ``compile="on"``: about a minute for the default model on 2 cores); a run
with ``compile="auto"`` uses them when they are there and never waits for a build it did not ask for. Whether
they beat the eager path on this machine is timed once and kept beside them (:func:`probe_times`).

A package is keyed by everything its code depends on: the model file's sha256, the layer, the radial table,
torch's version, the CPU's vector ISA (``torch.backends.cpu.get_cpu_capability()``: a package built with
AVX-512 does not run on an AVX2 machine) and the source of this module and :mod:`trajden.model.fused`. Each
package has a JSON file of that key beside it. Packages are written to a temporary name and renamed, so
processes building the same package at once do not corrupt it. A loaded package is checked against the eager
block on random inputs before it is used; any failure (no C++ compiler, an export error, a mismatch) warns and
leaves the caller to its other paths.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import torch

#: ``trajden.evaluator.aot-cache`` value for the default directory, and the values that switch the cache off
AUTO = "auto"
OFF = ("off", "none", "false", "")

logger = logging.getLogger(__name__)

#: dynamic dimensions start at 2 (torch.export specialises sizes 0 and 1); smaller blocks run eagerly
MIN_DIM = 2


def cache_dir(setting: str | os.PathLike | None) -> Path | None:
    """The directory of ``trajden.evaluator.aot-cache``: ``auto`` is ``$XDG_CACHE_HOME/trajden/aot`` (else
    ``~/.cache/trajden/aot``); ``off`` (or ``None``) is no cache."""
    if setting is None or str(setting).strip().lower() in OFF:
        return None
    if str(setting).strip().lower() == AUTO:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "trajden" / "aot"
    return Path(os.path.expanduser(os.fspath(setting)))


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    h = hashlib.sha256()
    from trajden.model import fused

    for mod in (fused.__file__, __file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()[:16]


def package_key(model_sha256: str, layer: int, table, inv_sqrt_nb: float) -> dict:
    """What a layer's package depends on (its cache key, also written beside it)."""
    return {
        "model_sha256": model_sha256,
        "layer": int(layer),
        "table": [float(table.r_min), float(table.step), int(table.table.shape[0]), int(table.table.shape[1])],
        "inv_sqrt_nb": float(inv_sqrt_nb),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "source": _source_digest(),
    }


def _key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


class _Block(torch.nn.Module):
    """One layer's :meth:`~trajden.model.fused.FusedTP.block` with its radial table and constants baked in
    (what is exported)."""

    def __init__(self, tp, table, inv_sqrt_nb: float):
        super().__init__()
        self.tp = tp
        self.register_buffer("table", table.table)
        self.register_buffer("delta", table.delta)
        self.r_min, self.step, self.inv = float(table.r_min), float(table.step), float(inv_sqrt_nb)

    def forward(self, h, x_rows, src, vec, slots):
        return self.tp.block(h, x_rows, src, vec, slots, self.table, self.delta, self.r_min, self.step, self.inv)


class AotLayer:
    """A layer's compiled block, called like :meth:`~trajden.model.fused.FusedTP.block` (the radial table and
    constants passed in are the ones baked into the package and are ignored); blocks too small for the
    package's dynamic dimensions run the eager block."""

    def __init__(self, fn, tp, path: Path):
        self.fn, self.tp, self.path = fn, tp, path

    def __call__(self, h, x_rows, src, vec, slots, table, delta, r_min, step, inv_sqrt_nb):
        if min(h.shape[0], x_rows.shape[0], src.shape[0], slots.shape[1]) < MIN_DIM:
            return self.tp.block(h, x_rows, src, vec, slots, table, delta, r_min, step, inv_sqrt_nb)
        return self.fn(h, x_rows, src, vec, slots.to(torch.int32))


def _example(tp, table, rows: int = 64, k: int = 12, seed: int = 0):
    """Random inputs of one block on the CPU, ``rows`` rows of about ``k`` edges each
    (:func:`trajden.model.evaluate.random_layer_block`)."""
    from trajden.model.evaluate import random_layer_block

    return random_layer_block(tp, table, torch.device("cpu"), 3 * rows, rows, rows * k, seed)


def _build(module: _Block, example, path: Path) -> None:
    from torch.export import Dim, export

    n, r, e, k = (Dim(s, min=MIN_DIM) for s in ("atoms", "rows", "edges", "slots"))
    shapes = {"h": {0: n}, "x_rows": {0: r}, "src": {0: e}, "vec": {0: e}, "slots": {0: r, 1: k}}
    with torch.no_grad():
        program = export(module, example, dynamic_shapes=shapes, strict=False)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=os.fspath(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def aot_layers(tensor_products: list, radial_tables: list, inv_sqrt_nb: list, model_sha256: str,
               directory: Path, build: bool = True) -> list | None:
    """Per layer ``{"layer": AotLayer}`` (the shape of :func:`trajden.model.evaluate.compile_aggregates`'s
    result) from the cache ``directory``, building the packages that are missing when ``build``; ``None``
    when a package is missing and not built, or when building, loading or checking one fails (a warning).

    Building a package is logged (logger ``trajden.model.aot``, INFO: once per machine, model and torch
    version, about 10-30 s per layer on 2 cores).
    """
    out = []
    try:
        for li, (tp, table, inv) in enumerate(zip(tensor_products, radial_tables, inv_sqrt_nb)):
            key = package_key(model_sha256, li, table, inv)
            path = directory / f"{_key_name(key)}.pt2"
            module = _Block(tp, table, inv).eval()
            if not path.exists():
                if not build:
                    return None
                directory.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                logger.info("compiling layer %d of model %s ahead of time into %s (once per machine)", li,
                            model_sha256[:12], directory)
                _build(module, _example(tp, table), path)
                meta = {**key, "build_seconds": round(time.perf_counter() - t0, 1)}
                logger.info("layer %d compiled in %.1f s", li, meta["build_seconds"])
                path.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            fn = torch._inductor.aoti_load_package(os.fspath(path))
            check = _example(tp, table, rows=37, k=9, seed=li + 1)
            with torch.no_grad():
                ref, got = module(*check), fn(*check)
            if got.shape != ref.shape or not torch.allclose(got, ref, atol=1e-4, rtol=1e-4):
                warnings.warn(f"{path}: the ahead-of-time compiled layer disagrees with the eager one: not used",
                              stacklevel=2)
                return None
            out.append({"layer": AotLayer(fn, tp, path)})
    except Exception as err:  # noqa: BLE001 - an optional speed-up: any failure leaves the other paths
        warnings.warn(f"ahead-of-time compiled layers unavailable ({type(err).__name__}: {err})", stacklevel=2)
        return None
    return out


def probe_times(directory: Path, model_sha256: str, measure) -> tuple[bool, dict]:
    """Whether the compiled layers are faster than eager on this machine, and the timings: read from
    ``probe-<key>.json`` in ``directory`` where a run measured them before (``measure()`` ->
    ``(faster, {"eager": s, "compiled": s})``, :func:`trajden.model.evaluate.compiled_is_faster`), else measured
    now and kept there. A probe costs about 2-4 s on 2 cores; with the packages it is paid once per machine."""
    key = {"model_sha256": model_sha256, "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "source": _source_digest(),
           "threads": torch.get_num_threads()}
    path = directory / f"probe-{_key_name(key)}.json"
    try:
        got = json.loads(path.read_text())
        return bool(got["faster"]), got["times"]
    except (OSError, ValueError, KeyError):
        pass
    faster, times = measure()
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, "faster": bool(faster), "times": times}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
    return faster, times


def has_packages(directory: Path | None, model_sha256: str) -> bool:
    """Whether ``directory`` holds any package built for the model file ``model_sha256`` (a cheap look at the
    keys beside the packages, for messages; :func:`cached` is the exact test)."""
    if directory is None or not directory.is_dir():
        return False
    for meta in directory.glob("*.json"):
        try:
            if json.loads(meta.read_text()).get("model_sha256") == model_sha256 and meta.with_suffix(".pt2").exists():
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def cached(tensor_products: list, radial_tables: list, inv_sqrt_nb: list, model_sha256: str,
           directory: Path | None) -> bool:
    """Whether every layer's package is already in ``directory``."""
    if directory is None or not tensor_products or not radial_tables:
        return False
    try:
        return all((directory / f"{_key_name(package_key(model_sha256, li, table, inv))}.pt2").exists()
                   for li, (table, inv) in enumerate(zip(radial_tables, inv_sqrt_nb)))
    except Exception:  # noqa: BLE001
        return False
