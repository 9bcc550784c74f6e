"""Real-MD validation of the denoiser on the LAMMPS fixtures (tests/data/md, made by make_fixtures.py).

    python pipelines/validate_md.py [--model fcc-bcc-hcp] [--fixtures DIR] [--out pipelines/out/md]

Per fixture and frame: a-CNA and PTM accuracy raw -> denoised (crystals: fraction labelled as the prepared
structure; liquid: fraction "other"), the scale found, iterations; Frenkel pair: defect atoms after
denoising vs the energy-minimised frames. Writes md_validation.csv and md_validation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from trajden import names
from trajden.model.package import load_model
from trajden.validation import defect_agreement, score_frames

ROOT = Path(__file__).resolve().parents[1]
CASES = ["cu_fcc_hot", "cu_hcp_hot", "cu_bcc_60GPa", "cu_fcc_hot_0.8", "cu_fcc_hot_1.2", "cu_liquid", "cu_fcc_frenkel"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fcc-bcc-hcp")
    ap.add_argument("--fixtures", default=str(ROOT / "tests/data/md"))
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "pipelines/out/md"))
    args = ap.parse_args(argv)
    fx = Path(args.fixtures)
    manifest = json.loads((fx / "manifest.json").read_text())["fixtures"]
    model = load_model(args.model)
    rows, md = [], []
    md.append(f"Model `{model.name}` (sha256 {model.sha256[:12]}), k <= {args.iterations}, automatic scale.\n")
    md.append("| fixture | T (K) | atoms | target | a-CNA raw | a-CNA denoised | PTM raw | PTM denoised | scale | k |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in CASES:
        info = manifest[name]
        target = info["expected_label"] if info["expected_label"] is not None else names.OTHER
        scores, labels = score_frames(fx / info["file"], model, target, k=args.iterations, label=name)
        for s in scores:
            rows.append(s.row())
        mean = {
            k: float(np.mean([getattr(s, k) for s in scores]))
            for k in ("acna_raw", "acna_denoised", "ptm_raw", "ptm_denoised", "scale", "iterations")
        }
        md.append(
            f"| {name} | {info.get('T_K')} | {scores[0].atoms} | {scores[0].target} | {mean['acna_raw']:.4f} "
            f"| {mean['acna_denoised']:.4f} | {mean['ptm_raw']:.4f} | {mean['ptm_denoised']:.4f} "
            f"| {mean['scale']:.3f} | {mean['iterations']:.1f} |"
        )
        print(md[-1], flush=True)
        if name == "cu_fcc_frenkel":
            from trajden.classify import acna
            from trajden.io.readers import Trajectory

            ref = Trajectory(str(fx / manifest["cu_fcc_frenkel_min"]["file"]))
            md.append("\nFrenkel pair (vacancy + interstitial, hot fcc Cu) vs the same frames minimised at 0 K:\n")
            md.append("| frame | defect atoms raw | denoised | minimised | in both | agreement |")
            md.append("|---|---|---|---|---|---|")
            for i, (raw, den) in enumerate(labels):
                f = ref.frame(i)
                a = defect_agreement(den, acna(f.positions, f.cell, f.origin))
                md.append(
                    f"| {i} | {int((raw != names.FCC).sum())} | {a['defect_atoms_denoised']} "
                    f"| {a['defect_atoms_minimised']} | {a['both']} | {a['agreement']:.4f} |"
                )
                print(md[-1], flush=True)
            md.append("")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "md_validation.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "md_validation.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out}/md_validation.csv and md_validation.md")


if __name__ == "__main__":
    main()
