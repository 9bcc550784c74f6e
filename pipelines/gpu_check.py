"""GPU check for a session that is lent a device (issue 7): same results as the CPU, and atoms/s at 1e6 atoms.

    .venv/bin/python pipelines/gpu_check.py [--device cuda] [--sizes 250000 1000000 4000000] [--out DIR]

Sections (each one is recorded even when another fails; errors are written into the report):

1. ``env``: torch / CUDA / e3nn / vesin versions, the GPU's name, which evaluation path the model takes on the
   CPU and on the device (``fast`` expected on both; ``forward`` would be a silent fallback).
2. ``fixture``: frame 0 of the real-MD fixture ``tests/data/md/cu_gb_liquid.dump`` (grain boundaries +
   liquid) denoised on the CPU and on the device (default tol, automatic scale); the largest position
   difference (float32 summation order differs: expect ~1e-5 A) and whether iterations and status agree;
   the same frame decomposed into 2 blocks along its longest axis on the device ("pieces on one GPU")
   against the undivided device run.
3. ``neighbours``: the neighbour list of the largest frame on the CPU (vesin, all cores) and on the device
   (vesin's CUDA backend): wall time and edge counts.
4. ``speed``: synthetic hot fcc Cu frames of about ``--sizes`` atoms (noise 0.08 d_nn), k = 8 at tol 0 and
   "until converged" (default tol), undivided, each timed after one warm-up call on the same frame:
   atom-iterations/s (the issue's target on one H100-class GPU: >= 1e7) and the peak GPU memory; and one
   evaluator call alone (graph built), to separate the network from the neighbour lists and the loop.
5. ``variants`` (at 1e6 atoms): the eager evaluator (``EvaluatorOptions(compile="off")``), each compiled sum
   (``aggregate="atomic"`` / ``"padded"``), the CPU's compiled whole layers (``layer``: not yet measured
   on a GPU), edges per evaluation block, 2 x 2 x 2 spatial blocks in turn,
   e3nn's own tensor products (``fused=False``); max position difference to the default run reported.
   (TF32 matrix products were tried on the first lent GPU: 30x the position error and 4x slower; dropped.)
6. ``profile``: torch.profiler of one evaluator call at 1e6 atoms, the 25 most expensive device kernels.

Prints the report and writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``. Needs a CUDA build of
torch. ``--device cpu --sizes 20000`` runs the same sections on the CPU (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

D_NN = 2.556  # Cu, angstrom


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def _peak_reset(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def _peak_mb(device):
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return None


def hot_fcc(n_atoms: int, seed: int = 0):
    """A hot fcc Cu frame of about ``n_atoms`` atoms (noise 0.08 d_nn per coordinate)."""
    from trajden.lattices import add_noise, make_crystal

    n_cells = round((n_atoms / 4) ** (1 / 3))
    c = make_crystal("fcc", reps=(n_cells,) * 3, d_nn=D_NN)
    pos, _ = add_noise(c.positions, 0.08 * D_NN, np.random.default_rng(seed))
    return pos, c.cell


def timed(sync_device, fn, /, *a, **kw):
    """``fn(*a, **kw)`` and its wall time, the device synchronised before and after."""
    _sync(sync_device)
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    _sync(sync_device)
    return out, time.perf_counter() - t0


def section_env(args, rep):
    import torch

    from trajden.decompose import evaluator
    from trajden.denoise import CPU_BLOCK_EDGES, GPU_BLOCK_EDGES
    from trajden.model.package import load_model

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": args.device}
    for mod in ("e3nn", "vesin", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as err:  # noqa: BLE001 - recorded
            env[mod] = f"not importable: {err}"
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
        env["gpu_memory_gb"] = torch.cuda.get_device_properties(torch.device(args.device)).total_memory / 2**30
    rep["env"] = env
    cpu = load_model(args.model)
    dev = load_model(args.model, device=args.device)
    env["evaluator_cpu"] = evaluator(cpu, CPU_BLOCK_EDGES).mode
    gpu_edges = GPU_BLOCK_EDGES if args.device.startswith("cuda") else CPU_BLOCK_EDGES
    t0 = time.perf_counter()
    ev = evaluator(dev, gpu_edges)
    env["evaluator_device_construct_s"] = time.perf_counter() - t0  # includes torch.compile where it runs
    env["evaluator_device"] = ev.mode
    env["aggregate_times_s"] = ev.aggregate_times
    return cpu, dev


def section_fixture(args, rep, cpu, dev):
    from trajden.denoise import denoise
    from trajden.io.readers import Trajectory

    f = Trajectory(str(ROOT / "tests" / "data" / "md" / "cu_gb_liquid.dump")).frame(0)
    a = denoise(f.positions, f.cell, f.types, cpu)
    b = denoise(f.positions, f.cell, f.types, dev)
    from trajden.decompose import heights

    counts = tuple(2 if a == int(np.argmax(heights(f.cell))) else 1 for a in range(3))  # split the long axis
    c = denoise(f.positions, f.cell, f.types, dev, blocks=counts)
    rep["fixture"] = {
        "atoms": len(f.positions),
        "cpu_iterations": a.iterations,
        "device_iterations": b.iterations,
        "max_abs_diff_cpu_vs_device_A": float(np.abs(a.positions - b.positions).max()),
        "same_iterations_status": bool(a.iterations == b.iterations and a.status == b.status),
        "blocks": counts,
        "max_abs_diff_blocks_vs_whole_on_device_A": float(np.abs(c.positions - b.positions).max()),
        "blocks_same_iterations_status": bool(c.iterations == b.iterations and c.status == b.status),
    }


def section_neighbours(args, rep, dev):
    import torch

    from trajden.neighbors import build_graph

    n = max(args.sizes)
    pos, cell = hot_fcc(n)
    scale = D_NN / dev.nn_distance
    pm, cm = pos / scale, cell / scale
    out = {"atoms": len(pos)}
    build_graph(pm, cm, dev.cutoff, 0.2)  # warm-up
    g, t = timed("cpu", build_graph, pm, cm, dev.cutoff, 0.2)
    out.update(cpu_s=t, cpu_edges=int(g.src.numel()))
    x = torch.as_tensor(pm, dtype=torch.float32, device=args.device)
    build_graph(x, cm, dev.cutoff, 0.2, device=args.device)
    g2, t2 = timed(args.device, build_graph, x, cm, dev.cutoff, 0.2, device=args.device)
    out.update(device_s=t2, device_edges=int(g2.src.numel()), device_graph_on=str(g2.src.device))
    rep["neighbours"] = out


def section_speed(args, rep, dev):
    import torch

    from trajden.decompose import evaluator
    from trajden.denoise import CPU_BLOCK_EDGES, GPU_BLOCK_EDGES, denoise
    from trajden.neighbors import build_graph

    rows = []
    rep["speed"] = rows
    edges = GPU_BLOCK_EDGES if args.device.startswith("cuda") else CPU_BLOCK_EDGES
    for n in args.sizes:
        pos, cell = hot_fcc(n)
        row = {"atoms": len(pos)}
        rows.append(row)
        denoise(pos, cell, None, dev, k=1, tol=0, scale=D_NN)  # warm-up (allocations, kernels)
        _peak_reset(args.device)
        r, t = timed(args.device, denoise, pos, cell, None, dev, k=8, tol=0, scale=D_NN)
        row.update(k8_s=t, k8_iterations=r.iterations, k8_atom_it_per_s=len(pos) * r.iterations / t,
                   k8_peak_mb=_peak_mb(args.device))
        _peak_reset(args.device)
        r2, t2 = timed(args.device, denoise, pos, cell, None, dev, scale=D_NN)
        row.update(conv_s=t2, conv_iterations=r2.iterations, conv_peak_mb=_peak_mb(args.device))
        # one evaluator call alone on a built graph
        scale = D_NN / dev.nn_distance
        x = torch.as_tensor(pos / scale, dtype=torch.float32, device=args.device)
        g = build_graph(x if args.device.startswith("cuda") else pos / scale, cell / scale,
                        dev.cutoff, 0.2, device=args.device, sort=True)
        types = torch.zeros(len(pos), dtype=torch.long, device=args.device)
        ev = evaluator(dev, edges)
        ev(x, g, types)
        _, te = timed(args.device, ev, x, g, types)
        row.update(evaluator_call_s=te, evaluator_atoms_per_s=len(pos) / te, edges=int(g.src.numel()))
        print(f"  speed {row}", flush=True)


def section_variants(args, rep, dev):
    from trajden.denoise import denoise
    from trajden.model.options import EvaluatorOptions

    n = 1_000_000 if 1_000_000 in args.sizes else min(args.sizes)
    pos, cell = hot_fcc(n)
    ref = denoise(pos, cell, None, dev, k=8, tol=0, scale=D_NN)
    rows = []
    rep["variants"] = rows
    cases = ([("compile_off", None), ("aggregate", "atomic"), ("aggregate", "padded"), ("aggregate", "layer")]
             + [("block_edges", e) for e in args.block_edges] + [("blocks", (2, 2, 2)), ("fused_off", None)])
    for name, value in cases:
        row = {"variant": name, "value": value, "atoms": len(pos)}
        rows.append(row)
        try:
            kw = {name: value} if name in ("block_edges", "blocks") else {}
            if name == "fused_off":
                kw["options"] = EvaluatorOptions(fused=False)
            if name == "compile_off":
                kw["options"] = EvaluatorOptions(compile="off")
            if name == "aggregate":
                kw["options"] = EvaluatorOptions(aggregate=value)
            denoise(pos, cell, None, dev, k=1, tol=0, scale=D_NN, **kw)
            _peak_reset(args.device)
            r, t = timed(args.device, denoise, pos, cell, None, dev, k=8, tol=0, scale=D_NN, **kw)
            row.update(k8_s=t, atom_it_per_s=len(pos) * 8 / t, peak_mb=_peak_mb(args.device),
                       max_abs_diff_A=float(np.abs(r.positions - ref.positions).max()))
        except Exception as err:  # noqa: BLE001 - recorded, the next variant runs
            row["error"] = f"{type(err).__name__}: {err}"
        print(f"  variant {row}", flush=True)


def section_profile(args, rep, dev):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from trajden.decompose import evaluator
    from trajden.denoise import CPU_BLOCK_EDGES, GPU_BLOCK_EDGES
    from trajden.neighbors import build_graph

    n = 1_000_000 if 1_000_000 in args.sizes else min(args.sizes)
    pos, cell = hot_fcc(n)
    scale = D_NN / dev.nn_distance
    cuda = args.device.startswith("cuda")
    x = torch.as_tensor(pos / scale, dtype=torch.float32, device=args.device)
    g = build_graph(x if cuda else pos / scale, cell / scale, dev.cutoff, 0.2, device=args.device, sort=True)
    types = torch.zeros(len(pos), dtype=torch.long, device=args.device)
    ev = evaluator(dev, GPU_BLOCK_EDGES if cuda else CPU_BLOCK_EDGES)
    ev(x, g, types)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        ev(x, g, types)
        _sync(args.device)
    key = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
    rep["profile"] = table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="fcc-bcc-hcp", help="shipped model name or model file")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000])
    ap.add_argument("--block-edges", type=int, nargs="+", default=[1 << 20, 1 << 22, 1 << 24])
    ap.add_argument("--sections", nargs="+",
                    default=["fixture", "neighbours", "speed", "variants", "profile"])
    ap.add_argument("--out", type=Path, default=ROOT / "pipelines" / "out" / "gpu_check")
    args = ap.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: {args.device} requested but torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rep: dict = {"errors": {}}

    def save():
        (args.out / "gpu_check.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
        lines = ["# gpu_check", ""]
        for k, v in rep.items():
            if k == "profile":
                continue
            lines += [f"## {k}", "", "```", json.dumps(v, indent=1, default=str), "```", ""]
        if "profile" in rep:
            lines += ["## profile", "", "```", rep["profile"], "```"]
        (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")

    t_start = time.perf_counter()
    cpu, dev = section_env(args, rep)
    print(json.dumps(rep["env"], indent=1), flush=True)
    steps = {
        "fixture": lambda: section_fixture(args, rep, cpu, dev),
        "neighbours": lambda: section_neighbours(args, rep, dev),
        "speed": lambda: section_speed(args, rep, dev),
        "variants": lambda: section_variants(args, rep, dev),
        "profile": lambda: section_profile(args, rep, dev),
    }
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            steps[name]()
        except Exception as err:  # noqa: BLE001 - recorded, the next section runs
            rep["errors"][name] = traceback.format_exc()
            print(f"{name}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        rep.setdefault("section_s", {})[name] = time.perf_counter() - t0
        save()
        print(f"-- {name} done in {time.perf_counter() - t0:.1f} s (total {time.perf_counter() - t_start:.1f})",
              flush=True)
    for k in ("fixture", "neighbours"):
        if k in rep:
            print(k, json.dumps(rep[k]))
    if "profile" in rep:
        print(rep["profile"])
    save()
    return 1 if rep["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
