"""GPU check for a session that is lent a device (issue 7): same results as the CPU, and atoms/s at 1e6 atoms.

    .venv/bin/python pipelines/gpu_check.py [--device cuda] [--atoms 1000000] [--out pipelines/out/gpu_check.json]

1. Correctness: frame 0 of the real-MD fixture ``tests/data/md/cu_gb_liquid.dump`` (grain boundaries + liquid) is
   denoised on the CPU and on ``--device`` (default tol, automatic scale); reports the largest position difference
   (float32 summation order differs: expect ~1e-5 A) and whether iterations and status agree.
2. Speed: a synthetic hot fcc Cu frame of about ``--atoms`` atoms (noise 0.08 d_nn), k = 8 at tol 0, undivided,
   timed after one warm-up call on the same frame; reports atom-iterations/s (the issue's target on one H100-class
   GPU: >= 1e7) and the peak GPU memory.

Prints a table and writes the JSON given by ``--out``. Needs a CUDA build of torch in the venv.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--atoms", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=ROOT / "pipelines" / "out" / "gpu_check.json")
    args = ap.parse_args(argv)
    import torch

    from trajden.denoise import denoise
    from trajden.io.readers import Trajectory
    from trajden.lattices import add_noise, make_crystal
    from trajden.model.package import load_model

    out: dict = {"device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(f"gpu_check: {args.device} requested but torch {torch.__version__} sees no CUDA device",
                  file=sys.stderr)
            return 2
        out["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    cpu = load_model("fcc-bcc-hcp")
    dev = load_model("fcc-bcc-hcp", device=args.device)

    from trajden.decompose import evaluator
    from trajden.denoise import CPU_BLOCK_EDGES, GPU_BLOCK_EDGES

    # which evaluation path each model takes ("fast" expected on both; "forward" means a silent fallback)
    out["evaluator_cpu"] = evaluator(cpu, CPU_BLOCK_EDGES).mode
    gpu_edges = GPU_BLOCK_EDGES if args.device.startswith("cuda") else CPU_BLOCK_EDGES
    out["evaluator_device"] = evaluator(dev, gpu_edges).mode
    f = Trajectory(str(ROOT / "tests" / "data" / "md" / "cu_gb_liquid.dump")).frame(0)
    a = denoise(f.positions, f.cell, f.types, cpu)
    b = denoise(f.positions, f.cell, f.types, dev)
    out["fixture_max_abs_diff_A"] = float(np.abs(a.positions - b.positions).max())
    out["fixture_same_iterations_status"] = bool(a.iterations == b.iterations and a.status == b.status)

    d_nn = 2.556
    n_cells = round((args.atoms / 4) ** (1 / 3))
    c = make_crystal("fcc", reps=(n_cells,) * 3, d_nn=d_nn)
    pos, _ = add_noise(c.positions, 0.08 * d_nn, np.random.default_rng(0))
    denoise(pos, c.cell, None, dev, k=1, tol=0, scale=d_nn)  # warm-up (allocations, kernels)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(args.device))
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = denoise(pos, c.cell, None, dev, k=8, tol=0, scale=d_nn)
    wall = time.perf_counter() - t0  # denoise returns host arrays: the device work is finished
    out.update(atoms=len(pos), iterations=r.iterations, wall_s=wall,
               atom_iterations_per_s=len(pos) * r.iterations / wall)
    if args.device.startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(torch.device(args.device)) / 2**20
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for k, v in out.items():
        print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
