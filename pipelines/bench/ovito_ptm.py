"""The baseline of the profile: OVITO reading a dump and labelling its frames with PTM, in one process.

Run as ``python -m pipelines.bench.ovito_ptm DUMP --frames START:STOP --json OUT`` (from the repository root):
imports OVITO, opens the dump with OVITO's own reader (``ovito.io.import_file``), adds a
``PolyhedralTemplateMatchingModifier`` with the structures trajden enables (fcc, hcp, bcc, sc, cubic and
hexagonal diamond; OVITO's RMSD cutoff 0.1) and computes every selected frame. Writes the import, per-frame
and total seconds and the fcc fraction of each frame.
"""

from __future__ import annotations

import argparse
import json
import time

_T0 = time.perf_counter()


def run(dump: str, start: int, stop: int | None) -> dict:
    """Read and PTM-label frames ``start:stop`` of ``dump``; seconds from this module's import on."""
    import numpy as np
    from ovito.io import import_file
    from ovito.modifiers import PolyhedralTemplateMatchingModifier as PTM

    t_import = time.perf_counter() - _T0
    pipeline = import_file(dump)
    mod = PTM(rmsd_cutoff=0.1)
    enabled = {PTM.Type.FCC, PTM.Type.HCP, PTM.Type.BCC, PTM.Type.SC, PTM.Type.CUBIC_DIAMOND, PTM.Type.HEX_DIAMOND}
    for s in mod.structures:
        if s.id != PTM.Type.OTHER:
            s.enabled = s.id in enabled
    pipeline.modifiers.append(mod)
    n = pipeline.source.num_frames
    frames = range(start, n if stop is None else min(stop, n))
    per_frame, fcc = [], []
    for i in frames:
        t = time.perf_counter()
        data = pipeline.compute(i)
        labels = np.asarray(data.particles["Structure Type"][...])
        per_frame.append(time.perf_counter() - t)
        fcc.append(float(np.mean(labels == int(PTM.Type.FCC))))
    return {"import_s": t_import, "frames": len(per_frame), "frame_s": per_frame, "fcc_fraction": fcc,
            "total_s": time.perf_counter() - _T0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dump")
    p.add_argument("--frames", default=":", help="START:STOP (python slice, step 1)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    a, _, b = args.frames.partition(":")
    out = run(args.dump, int(a or 0), int(b) if b else None)
    with open(args.json, "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
