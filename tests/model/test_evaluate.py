"""Blocked (memory-bounded) and active-set evaluation give the undivided result."""

import numpy as np
import pytest
import torch
from e3nn.util.jit import script

from trajden.denoise import denoise
from trajden.lattices import add_noise, make_crystal
from trajden.model.evaluate import BlockedEvaluator
from trajden.model.network import ScoreNet
from trajden.model.package import LoadedModel
from trajden.neighbors import build_graph


def _gb_liquid_frame(seed=0):
    """A periodic box with two fcc grains (a twist boundary) and a liquid-like slab, d_nn = 1."""
    rng = np.random.default_rng(seed)
    c = make_crystal("fcc", 3000)
    L = np.diag(c.cell)
    pos = c.positions.copy()
    upper = pos[:, 2] > 0.5 * L[2]
    # rotate the upper grain about z around the box centre and keep its atoms in the upper half
    R = np.array([[np.cos(0.4), -np.sin(0.4), 0], [np.sin(0.4), np.cos(0.4), 0], [0, 0, 1]])
    centre = 0.5 * L
    rotated = (pos - centre) @ R.T + centre
    rotated[:, :2] %= L[:2]
    pos[upper] = rotated[upper]
    liquid = (pos[:, 0] > 0.7 * L[0])
    pos[liquid] += rng.normal(scale=0.35, size=(liquid.sum(), 3))
    # drop atoms that ended up too close (the grain boundary), keep the frame physical
    g = build_graph(pos, c.cell, 0.7)
    drop = np.unique(np.maximum(g.src.numpy(), g.dst.numpy()))
    keep = np.setdiff1d(np.arange(len(pos)), drop)
    pos, _ = add_noise(pos[keep], 0.05, rng)
    return pos, c.cell


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = ScoreNet(cutoff=1.5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    meta = dict(name="t", cutoff=1.5, nn_distance=1.0, species=["X"], structures=["fcc"], sigma_max=0.13,
                trajden_version="0", n_layers=3)
    return LoadedModel(script(net), meta, "0" * 64, "<test>")


def test_blocked_equals_undivided_forward(model):
    pos, cell = _gb_liquid_frame()
    x = torch.tensor(pos, dtype=torch.float32)
    graph = build_graph(pos, cell, model.cutoff, skin=0.2, sort=True)
    types = torch.zeros(len(pos), dtype=torch.long)
    ev = BlockedEvaluator(model.module, block_edges=3000)
    assert ev.supported
    vec = graph.edge_vec(x)
    inside = (vec * vec).sum(-1) < model.cutoff**2
    with torch.no_grad():
        ref = model.module(vec[inside], graph.src[inside], graph.dst[inside], types)
    out = ev(x, graph, types)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    active = torch.zeros(len(pos), dtype=torch.bool)
    active[torch.randperm(len(pos), generator=torch.Generator().manual_seed(0))[:200]] = True
    part = ev(x, graph, types, active)
    torch.testing.assert_close(part[active], ref[active], atol=2e-6, rtol=1e-5)
    assert float(part[~active].abs().max()) == 0.0


def test_blocked_denoise_equals_undivided(model):
    pos, cell = _gb_liquid_frame()
    a = denoise(pos, cell, None, model, k=4, tol=0, scale=1.0, block_edges=2000)
    b = denoise(pos, cell, None, model, k=4, tol=0, scale=1.0, block_edges=10**9)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
    np.testing.assert_allclose(a.rms_history, b.rms_history, rtol=1e-5)


def test_unsupported_module_falls_back():
    class Plain(torch.nn.Module):
        def forward(self, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                    types: torch.Tensor):
            return torch.zeros(types.shape[0], 3).index_add(0, edge_dst, edge_vec)

    ev = BlockedEvaluator(torch.jit.script(Plain()))
    assert not ev.supported and ev.mode == "forward"


def test_block_pools_are_per_calling_thread():
    """Two task threads (e.g. Dask's, with several torch threads each) do not share one pool of threads."""
    import threading

    from trajden.model.evaluate import _block_pool

    cpu = torch.device("cpu")
    assert _block_pool(1, cpu, 10) is None and _block_pool(2, cpu, 1) is None  # nothing to share out
    here = _block_pool(2, cpu, 10)
    assert here is _block_pool(2, cpu, 10)
    other = []
    t = threading.Thread(target=lambda: other.append(_block_pool(2, cpu, 10)))
    t.start()
    t.join()
    assert other[0] is not None and other[0] is not here
    assert list(here.map(lambda _: torch.get_num_threads(), range(4))) == [1, 1, 1, 1]
