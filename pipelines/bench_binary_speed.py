"""Time per atom-iteration of the two-element model `binary` against the one-element default `fcc-bcc-hcp` (issue 19).

Both denoise the same hot B2 frame (16,000 atoms, noise 0.08 d_nn; for the one-element model the two species
are one, which B2 allows: its sites are bcc sites), k = 8 with tol = 0, eager evaluator, one thread, the two
models interleaved three times in one process so that a busy machine slows both alike; the ratio of the best
times is printed.

    python pipelines/bench_binary_speed.py [--atoms 16000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv=None) -> None:
    from trajden.denoise import denoise
    from trajden.lattices import make_crystal
    from trajden.model.options import EvaluatorOptions
    from trajden.model.package import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    c = make_crystal("b2", a.atoms, d_nn=2.5)
    x = c.positions + 0.08 * 2.5 * np.random.default_rng(0).standard_normal(c.positions.shape)
    opts = EvaluatorOptions(compile="off")
    models = {"fcc-bcc-hcp": (load_model("fcc-bcc-hcp"), None), "binary": (load_model("binary"), c.types)}
    for model, types in models.values():
        denoise(x, c.cell, types, model, k=1, tol=0, options=opts)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(a.repeats):
        for name, (model, types) in models.items():
            t0 = time.perf_counter()
            denoise(x, c.cell, types, model, k=8, tol=0, options=opts)
            times[name].append(time.perf_counter() - t0)
    for name, v in times.items():
        print(f"{name}: {c.n_atoms} atoms, k = 8: " + ", ".join(f"{s:.2f}" for s in v)
              + f" s; {c.n_atoms * 8 / min(v):.3g} atom-iterations/s")
    print(f"binary / fcc-bcc-hcp (best of {a.repeats}): {min(times['binary']) / min(times['fcc-bcc-hcp']):.2f}")


if __name__ == "__main__":
    main()
