"""Time per frame of trajden.ovito.DenoiseModifier in a plain ``ovito`` pipeline, next to the bare
:func:`trajden.denoise.denoise` call on the same frames (the modifier's own overhead is the difference).

    OVITO_THREAD_COUNT=1 python pipelines/bench_ovito_modifier.py --model fcc-bcc-hcp-fast --frames 0:25:6

Prints wall and CPU seconds per frame; run it on a quiet machine (numbers from a shared machine mean little).
The model is loaded (and, for large frames, compiled) before the timed frames.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources

os.environ.setdefault("OVITO_THREAD_COUNT", "1")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", default=str(resources.files("trajden.data").joinpath("cu_solidification.dump")))
    ap.add_argument("--model", default="fcc-bcc-hcp")
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--frames", default="0:25:6", help="START:STOP:STEP")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--json", help="also write the per-frame times and medians here (pipelines/profile_default.py "
                    "puts them into docs/performance.md)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from ovito.io import import_file

    from trajden import names
    from trajden.cluster import get_model
    from trajden.denoise import denoise
    from trajden.io.readers import Trajectory, parse_frames
    from trajden.ovito import DenoiseModifier

    torch.set_num_threads(args.torch_threads)
    traj = Trajectory(args.input)
    frames = parse_frames(args.frames, len(traj))
    model = get_model(args.model, args.device)
    warm = traj.frame(frames[0])
    first = denoise(warm.positions, warm.cell, warm.types, model, k=1)  # load and set up the evaluator once

    pipeline = import_file(args.input)
    pipeline.modifiers.append(DenoiseModifier(model=args.model, iterations=args.iterations, device=args.device))
    rows = []
    for f in frames:
        fr = traj.frame(f)
        w0, c0 = time.perf_counter(), time.process_time()
        denoise(fr.positions, fr.cell, fr.types, model, k=args.iterations)
        w1, c1 = time.perf_counter(), time.process_time()
        pipeline.compute(f)
        w2, c2 = time.perf_counter(), time.process_time()
        rows.append((f, w1 - w0, c1 - c0, w2 - w1, c2 - c1))
        print(f"frame {f:5d}  denoise {w1 - w0:7.3f} s wall {c1 - c0:7.3f} s cpu   "
              f"modifier {w2 - w1:7.3f} s wall {c2 - c1:7.3f} s cpu", flush=True)
    r = np.array(rows)
    print(f"{traj.n_atoms} atoms, model {args.model}, k <= {args.iterations}, {len(frames)} frames: median per frame "
          f"denoise {np.median(r[:, 1]):.3f} s, modifier {np.median(r[:, 3]):.3f} s (wall)")
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump({"input": os.path.basename(args.input), "atoms": int(traj.n_atoms), "model": args.model,
                       "iterations": args.iterations, "frames": [int(f) for f in frames],
                       "torch_threads": args.torch_threads, "ovito_threads": os.environ.get("OVITO_THREAD_COUNT"),
                       "denoise_wall_s": r[:, 1].tolist(), "modifier_wall_s": r[:, 3].tolist(),
                       "modifier_cpu_s": r[:, 4].tolist(), "median_denoise_s": float(np.median(r[:, 1])),
                       "median_modifier_s": float(np.median(r[:, 3])),
                       "evaluator": "compiled layers" if first.evaluator == names.EVALUATOR_COMPILED else "eager"},
                      fh, indent=1)


if __name__ == "__main__":
    main()
