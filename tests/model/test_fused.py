"""The fast path: fused tensor products and tabulated radial networks reproduce the model file's own forward."""

import numpy as np
import pytest
import torch

from trajden.decompose import evaluator
from trajden.lattices import add_noise, make_crystal
from trajden.model.evaluate import sort_graph
from trajden.model.fused import fused_tensor_products
from trajden.model.package import load_model
from trajden.neighbors import build_graph


@pytest.fixture(scope="module", params=["fcc-bcc-hcp", "dc3"])
def shipped(request):
    return load_model(request.param)


def _scripted_tps(module):
    layers = dict(dict(module.named_children())["layers"].named_children())
    return [layers[str(i)].tp for i in range(len(layers))]


def test_fused_tensor_products_equal_the_scripted_ones(shipped):
    fused = fused_tensor_products(shipped.module, shipped.metadata)
    assert fused is not None and len(fused) == shipped.metadata["n_layers"]
    gen = torch.Generator().manual_seed(5)
    for f, tp in zip(fused, _scripted_tps(shipped.module)):
        x1 = 3 * torch.randn(500, f.dim_in1, generator=gen)
        x2 = torch.randn(500, f.dim_in2, generator=gen)
        w = torch.randn(500, f.weight_numel, generator=gen)
        with torch.no_grad():
            ref = tp(x1, x2, w)
            got = f.reference_order(x1, x2, w)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        # summing in fused order and mapping back equals summing the tensor product's messages
        idx = torch.randint(0, 7, (500,), generator=gen)
        s_ref = torch.zeros(7, ref.shape[1]).index_add_(0, idx, ref)
        s_got = f.standard(torch.zeros(7, ref.shape[1]).index_add_(0, idx, f(x1, x2, w)))
        torch.testing.assert_close(s_got, s_ref, atol=1e-4, rtol=1e-5)


def test_fast_evaluator_equals_the_model_forward(shipped, monkeypatch, crystal_liquid):
    x, graph, types = crystal_liquid("bcc" if shipped.name == "dc3" else "fcc", 2000, 0, shipped.cutoff)
    ev = evaluator(shipped, 1500)
    assert ev.tensor_products is not None and ev.radial_tables is not None
    assert ev.mode == "fast" and ev.device == shipped.device
    vec = graph.edge_vec(x)
    inside = (vec * vec).sum(-1) < shipped.cutoff**2
    with torch.no_grad():
        ref = shipped.module(vec[inside], graph.src[inside], graph.dst[inside], types)
    out = ev(x, graph, types)
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) < 2e-5 * max(scale, 1.0)
    active = torch.zeros(len(x), dtype=torch.bool)
    active[::7] = True
    part = ev(x, graph, types, active)
    assert float((part[active] - ref[active]).abs().max()) < 2e-5 * max(scale, 1.0)
    assert float(part[~active].abs().max()) == 0.0


def test_fast_path_can_be_switched_off(shipped):
    from trajden.model.options import EvaluatorOptions

    ev = evaluator(shipped, 4096, options=EvaluatorOptions(fused=False))
    assert ev.tensor_products is None and ev.radial_tables is None
    assert ev.mode == "blocked"


def test_threads_over_blocks_give_bit_identical_results(shipped, monkeypatch):
    """Blocks run on a thread pool (one intra-op thread each) exactly as they run one after another."""
    c = make_crystal("fcc", 1500)
    pos, _ = add_noise(c.positions, 0.1, np.random.default_rng(4))
    x = torch.tensor(pos, dtype=torch.float32)
    graph = sort_graph(build_graph(pos, c.cell, shipped.cutoff, skin=0.2))
    types = torch.zeros(len(pos), dtype=torch.long)
    ev = evaluator(shipped, 1024)
    active = torch.zeros(len(pos), dtype=torch.bool)
    active[::5] = True
    from trajden.model.evaluate import _in_new_thread

    default = _in_new_thread(torch.get_num_threads)
    out = {}
    try:
        for threads in (1, 3):
            ev.threads = threads
            out[threads] = (ev(x, graph, types), ev(x, graph, types, active))
    finally:
        ev.threads = None
    assert torch.equal(out[1][0], out[3][0]) and torch.equal(out[1][1], out[3][1])
    assert float(out[3][0].abs().max()) > 0  # a real result, not zeros
    # the pool's threads run single-threaded without changing what other threads get (Dask's, the caller's)
    assert _in_new_thread(torch.get_num_threads) == default
