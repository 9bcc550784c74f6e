"""The compiled functions of the fast path (:func:`trajden.model.evaluate.compile_aggregates`):
:meth:`FusedTP.aggregate`, ``aggregate_padded`` (a GPU's sums) and ``aggregate_rows`` (inside a CPU's compiled
layer) equal the fused messages summed per atom, and the compiled evaluator equals the eager one (here on the
CPU, where ``EvaluatorOptions(compile="on")`` turns it on)."""

import shutil
import warnings

import pytest
import torch

from trajden.decompose import evaluator
from trajden.model.evaluate import BlockedEvaluator, edge_slots
from trajden.model.fused import fused_tensor_products
from trajden.model.options import EvaluatorOptions
from trajden.model.package import load_model

EAGER = EvaluatorOptions(compile="off")
COMPILED = EvaluatorOptions(compile="on")


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
    ev = evaluator(model, 4096, options=EAGER)
    for li, (tp, table) in enumerate(zip(ev.tensor_products, ev.radial_tables)):
        h, src, dst, y, lengths, tab, rows = _block(tp, table, li)
        vec = torch.nn.functional.normalize(torch.randn(len(src), 3, generator=torch.Generator().manual_seed(li)),
                                            dim=-1) * lengths.unsqueeze(-1)
        with torch.no_grad():
            ref = torch.zeros(rows, tp.dim_out).index_add_(0, dst, tp(h[src], y, table(lengths)))
            atomic = tp.aggregate(h, src, dst, y, lengths, *tab, rows)
            padded = tp.aggregate_padded(h, src, y, lengths, edge_slots(dst, rows), *tab)
            # per row from the edge vectors: their harmonics and lengths computed inside
            ref_vec = torch.zeros(rows, tp.dim_out).index_add_(0, dst, tp(h[src], tp.sh(vec), table(lengths)))
            by_rows = tp.aggregate_rows(h, src, vec, edge_slots(dst, rows).to(torch.int32), *tab)
        # float32 sums in another order: differences scale with the sums' magnitude (as in the evaluator test
        # below), not with each entry's, which cancellation can make arbitrarily small
        tol = 1e-5 * max(float(ref.abs().max()), float(ref_vec.abs().max()), 1.0)
        torch.testing.assert_close(atomic, ref, atol=tol, rtol=1e-5)
        torch.testing.assert_close(padded, ref, atol=tol, rtol=1e-5)
        torch.testing.assert_close(by_rows, ref_vec, atol=tol, rtol=1e-5)
        assert float(ref[7].abs().max()) == 0.0 and float(padded[7].abs().max()) == 0.0
        assert float(by_rows[7].abs().max()) == 0.0


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
@pytest.mark.parametrize("impl", ["layer", "atomic", "padded"])
def test_compiled_evaluator_equals_eager(model, monkeypatch, impl, crystal_liquid):
    x, graph, types = crystal_liquid("fcc", 1500, 4, model.cutoff)
    ref = evaluator(model, 1500, options=EAGER)(x, graph, types)
    ev = evaluator(model, 1500, options=EvaluatorOptions(compile="on", aggregate=impl))
    assert ev.mode == f"fast+compiled-{impl}"
    assert set(ev.compiled[0]) == {impl}  # only what runs is compiled
    out = ev(x, graph, types)
    scale = max(float(ref.abs().max()), 1.0)
    assert float((out - ref).abs().max()) < 2e-5 * scale
    active = torch.zeros(len(x), dtype=torch.bool)
    active[::5] = True
    part = ev(x, graph, types, active)
    assert float((part[active] - ref[active]).abs().max()) < 2e-5 * scale
    assert float(part[~active].abs().max()) == 0.0


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
def test_compiled_cpu_blocks_equal_eager(model, monkeypatch, crystal_liquid):
    """On a CPU the compiled sums run in their own (larger) blocks without the block pool: several of them
    give the eager result too."""
    from trajden.model.evaluate import BlockedEvaluator

    x, graph, types = crystal_liquid("fcc", 1500, 4, model.cutoff)
    ref = evaluator(model, 300, options=EAGER)(x, graph, types)
    monkeypatch.setattr(BlockedEvaluator, "CPU_COMPILED_BLOCK_EDGES", 2000)  # ~25 blocks on this frame
    ev = evaluator(model, 300, options=COMPILED)
    assert ev.mode == "fast+compiled-layer"  # each layer's whole block compiled
    assert set(ev.compiled[0]) == {"layer"}  # and nothing else (a GPU's sums are not compiled on a CPU)
    out = ev(x, graph, types)
    assert float((out - ref).abs().max()) < 2e-5 * max(float(ref.abs().max()), 1.0)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
def test_compiled_layers_handle_atoms_without_neighbours(model, monkeypatch):
    """A frame without a single edge (a dilute gas), and isolated atoms beside a crystal: the compiled
    layers give the eager result (there is no edge to gather from)."""
    import numpy as np

    from trajden.lattices import add_noise, make_crystal
    from trajden.neighbors import build_graph

    gas = np.stack(np.meshgrid(*[np.arange(4) * 3.0] * 3, indexing="ij"), -1).reshape(-1, 3)  # 3 d apart
    c = make_crystal("fcc", 256)
    crystal, _ = add_noise(c.positions, 0.05, np.random.default_rng(0))
    frames = [(gas, 12.0 * np.eye(3)), (np.concatenate([crystal, gas + 40.0]), 60.0 * np.eye(3))]
    for pos, cell in frames:
        graph = build_graph(pos, cell, model.cutoff, 0.2, sort=True)
        x, types = torch.tensor(pos, dtype=torch.float32), torch.zeros(len(pos), dtype=torch.long)
        ref = evaluator(model, 1500, options=EAGER)(x, graph, types)
        ev = evaluator(model, 1500, options=COMPILED)
        assert ev.mode == "fast+compiled-layer"
        out = ev(x, graph, types)
        assert float((out - ref).abs().max()) < 2e-5 * max(float(ref.abs().max()), 1.0)
    assert graph.src.numel() > 0 and float(ref[len(crystal):].abs().max()) < 1e-6  # isolated atoms stay put


def test_compile_request_asks_for_auto_only_on_large_cpu_frames():
    from trajden.decompose import CPU_COMPILE_MIN_ATOMS, compile_request

    assert compile_request(CPU_COMPILE_MIN_ATOMS, "cpu") == "auto"
    assert compile_request(CPU_COMPILE_MIN_ATOMS - 1, "cpu") is None
    assert compile_request(10**7, "cuda:0") is None  # CUDA compiles by default anyway


def test_compile_request_asks_for_auto_in_long_runs_of_smaller_frames():
    """A run whose frames give each worker enough atom-frames repays the compilation with smaller frames."""
    from trajden.decompose import CPU_COMPILE_MIN_RUN_ATOMS, CPU_COMPILE_MIN_WORK, compile_request

    n = 32_000
    enough = -(-CPU_COMPILE_MIN_WORK // n)  # frames per worker
    assert compile_request(n, "cpu", enough) == "auto"
    assert compile_request(n, "cpu", enough - 1) is None
    assert compile_request(CPU_COMPILE_MIN_RUN_ATOMS - 1, "cpu", 10**6) is None  # tiny frames stay eager
    assert compile_request(n, "cuda:0", enough) is None


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
def test_auto_compile_keeps_the_compiled_sums_only_when_faster(model, monkeypatch):
    import trajden.model.evaluate as evaluate

    for faster, mode in ((False, "fast"), (True, "fast+compiled-layer")):
        monkeypatch.setattr(evaluate, "compiled_is_faster", lambda ev, f=faster: (f, {"eager": 1.0, "compiled": 2.0}))
        model.__dict__.pop("_evaluators", None)
        ev = evaluator(model, 4096, "auto", EvaluatorOptions())
        assert ev.mode == mode
        assert ev.compile_times == {"eager": 1.0, "compiled": 2.0}
    assert evaluator(model, 4096, "auto", EAGER).mode == "fast"  # compile="off" overrides the request


def test_compiled_is_faster_times_both_paths(model, monkeypatch):
    from trajden.model.evaluate import compiled_is_faster

    model.__dict__.pop("_evaluators", None)
    ev = evaluator(model, 4096, options=EAGER)
    ev.aggregate_impl = "atomic"  # the eager aggregate stands in for a compiled one: the timing is what is tested
    stand_in = [{"atomic": tp.aggregate} for tp in ev.tensor_products]
    ev.compiled = stand_in
    try:
        faster, times = compiled_is_faster(ev, n_atoms=500, reps=1)
        assert ev.compiled is stand_in  # put back after the timing
        assert set(times) == {"eager", "compiled"} and all(0 < t < float("inf") for t in times.values())
        assert faster == (times["compiled"] < 0.85 * times["eager"])
    finally:
        ev.compiled, ev.aggregate_impl = None, None


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
def test_compiled_evaluators_make_room_in_dynamos_cache():
    """Dynamo caches ``FusedTP.aggregate`` once per distinct layer shape, and past ``recompile_limit`` (8 by
    default; here 2) a layer would silently run eager (here: raise). Two two-layer networks of different
    widths make four entries: each evaluator raises the limit for its own layers."""
    from dataclasses import asdict

    from trajden.train import TrainConfig, build_network

    # dynamo's own patch (restores its config afterwards; pytest's monkeypatch leaves it broken)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True, recompile_limit=2):
        for hidden in ("4x0e+2x1o", "6x0e+4x1o"):
            cfg = TrainConfig(hidden=hidden, n_layers=2, atoms_per_cell=32)
            net = build_network(cfg).eval()
            tps = fused_tensor_products(net, {"training_config": asdict(cfg)})
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message="torch.compile")  # a failed compile warns, stays eager
                ev = BlockedEvaluator(net, 4096, cfg.cutoff, tps, compile=True)
            assert ev.compiled is not None and len(ev.compiled) == 2
    assert torch._dynamo.config.recompile_limit >= 8 and not torch._dynamo.config.fail_on_recompile_limit_hit


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile needs a C++ compiler on the CPU")
def test_denoise_reports_which_evaluator_ran(model, monkeypatch, crystal_liquid):
    """``DenoiseResult.evaluator`` (stored per frame) says whether compiled sums ran, whole frame or blocks."""
    import numpy as np

    from trajden import names
    from trajden.denoise import denoise
    from trajden.lattices import add_noise, make_crystal

    c = make_crystal("fcc", reps=(14, 4, 4))  # 19.8 d_nn along x: two blocks with their halos
    pos, _ = add_noise(c.positions, 0.06, np.random.default_rng(3))
    for options, code in ((EAGER, names.EVALUATOR_EAGER), (COMPILED, names.EVALUATOR_COMPILED)):
        for blocks in (None, (2, 1, 1)):
            res = denoise(pos, c.cell, None, model, k=2, tol=0, scale=1.0, blocks=blocks, options=options)
            assert res.evaluator == code, (options, blocks)


def test_a_failing_compile_set_up_leaves_the_eager_fast_path(model, monkeypatch):
    """The compiled path is optional: an error while setting it up warns and keeps the fused eager path
    (with its memory bound), not the monolithic forward."""
    import trajden.model.evaluate as evaluate

    def broken(*args, **kwargs):
        raise AttributeError("no such option")

    monkeypatch.setattr(evaluate, "compile_aggregates", broken)
    model.__dict__.pop("_evaluators", None)
    with pytest.warns(UserWarning, match="compiled evaluation set-up failed .*no such option"):
        ev = evaluator(model, 4096, True, EvaluatorOptions())
    assert ev.supported and ev.mode == "fast" and ev.compiled is None
    model.__dict__.pop("_evaluators", None)
