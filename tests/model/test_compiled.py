"""The compiled sums of the fast path (:func:`trajden.model.evaluate.compile_aggregates`, used on CUDA by
default): :meth:`FusedTP.aggregate` and ``aggregate_padded`` equal the fused messages summed per atom, and
the compiled evaluator equals the eager one (here on the CPU, where ``TRAJDEN_COMPILE=1`` turns it on)."""

import shutil

import pytest
import torch

from trajden.decompose import evaluator
from trajden.model.evaluate import edge_slots
from trajden.model.package import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("fcc-bcc-hcp")


def _block(tp, table, seed, n=80, rows=50, e=1200):
    gen = torch.Generator().manual_seed(seed)
    h = 2 * torch.randn(n, tp.dim_in1, generator=gen)
    src = torch.randint(0, n, (e,), generator=gen)
    dst = torch.sort(torch.randint(0, rows, (e,), generator=gen)).values
    dst[dst == 7] = 8  # a row without edges
    y = torch.randn(e, tp.dim_in2, generator=gen)
    lengths = 0.7 + 0.8 * torch.rand(e, generator=gen)
    return h, src, dst, y, lengths, (table.table, table.delta, table.r_min, table.step), rows


def test_edge_slots_lists_each_rows_edges_in_order():
    dst = torch.tensor([0, 0, 2, 2, 2, 3])
    slots = edge_slots(dst, 5)
    assert slots.tolist() == [[0, 1, -1], [-1, -1, -1], [2, 3, 4], [5, -1, -1], [-1, -1, -1]]


def test_aggregates_equal_summed_messages(model, monkeypatch):
    monkeypatch.delenv("TRAJDEN_FUSED", raising=False)
    monkeypatch.setenv("TRAJDEN_COMPILE", "0")
    ev = evaluator(model, 4096)
    for li, (tp, table) in enumerate(zip(ev.tensor_products, ev.radial_tables)):
        h, src, dst, y, lengths, tab, rows = _block(tp, table, li)
        with torch.no_grad():
            ref = torch.zeros(rows, tp.dim_out).index_add_(0, dst, tp(h[src], y, table(lengths)))
            atomic = tp.aggregate(h, src, dst, y, lengths, *tab, rows)
            padded = tp.aggregate_padded(h, src, y, lengths, edge_slots(dst, rows), *tab)
        torch.testing.assert_close(atomic, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
        assert float(ref[7].abs().max()) == 0.0 and float(padded[7].abs().max()) == 0.0


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
@pytest.mark.parametrize("impl", ["atomic", "padded"])
def test_compiled_evaluator_equals_eager(model, monkeypatch, impl, crystal_liquid):
    monkeypatch.delenv("TRAJDEN_FUSED", raising=False)
    x, graph, types = crystal_liquid("fcc", 1500, 4, model.cutoff)
    monkeypatch.setenv("TRAJDEN_COMPILE", "0")
    ref = evaluator(model, 1500)(x, graph, types)
    monkeypatch.setenv("TRAJDEN_COMPILE", "1")
    monkeypatch.setenv("TRAJDEN_AGGREGATE", impl)
    ev = evaluator(model, 1500)
    assert ev.mode == f"fast+compiled-{impl}"
    out = ev(x, graph, types)
    scale = max(float(ref.abs().max()), 1.0)
    assert float((out - ref).abs().max()) < 2e-5 * scale
    active = torch.zeros(len(x), dtype=torch.bool)
    active[::5] = True
    part = ev(x, graph, types, active)
    assert float((part[active] - ref[active]).abs().max()) < 2e-5 * scale
    assert float(part[~active].abs().max()) == 0.0
