"""The README picture and the bundled example's phase-fraction table (raw vs denoised vs vibration-averaged).

    python pipelines/demo_figures.py [--out docs] [--workdir pipelines/out/demo]

Runs ``trajden process`` on the bundled Cu solidification example twice (score-based denoising, and the
vibration-averaging baseline with a 5-frame window), then writes ``docs/demo_fractions.png`` (phase
fractions over time, raw dashed vs denoised solid), ``docs/demo_render.png`` (last frame coloured by
a-CNA, raw vs denoised) and ``docs/demo_fractions.md`` (a-CNA and PTM fractions per frame for the three).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

import trajden
from trajden import names
from trajden.analysis import phase_fractions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(trajden.__file__).parent / "data" / "cu_solidification.dump"


def cli(*args):
    cmd = [sys.executable, "-m", "trajden.cli", *map(str, args)]
    print("+ trajden", " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--workdir", default=str(ROOT / "pipelines/out/demo"))
    args = ap.parse_args(argv)
    work, out = Path(args.workdir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    den, avg = work / "denoised.zarr", work / "averaged.zarr"
    cli("process", EXAMPLE, "--out", den, "--timestep", "0.002", "--quiet")
    cli("process", EXAMPLE, "--out", avg, "--timestep", "0.002", "--method", "average", "--window", "5", "--quiet")
    cli("plot", den, "--out", out / "demo_fractions.png", "--method", "acna")
    cli("export", den, "--render", "--frames", "12:13", "--out", out / "demo_render.png")
    d = xr.open_zarr(den, consolidated=False)
    a = xr.open_zarr(avg, consolidated=False)
    lines = ["Bundled example `trajden/data/cu_solidification.dump` (LAMMPS, Mishin Cu EAM, 5,324 atoms, 0.77 Tm).",
             f"Model `{d.attrs[names.ATTR_MODEL]}`; vibration averaging over 5 frames (2 ps apart).", ""]
    for method in ("acna", "ptm"):
        raw = phase_fractions(d, method=method, raw=True).compute()
        dn = phase_fractions(d, method=method).compute()
        av = phase_fractions(a, method=method).compute()
        shown = [s for s in dn["structure"].values
                 if max(float(np.nanmax(x.sel(structure=s))) for x in (raw, dn, av)) >= 0.005]
        lines.append(f"{method.upper()} fractions (%), raw / denoised / vibration-averaged:")
        lines.append("")
        lines.append("| frame | time (ps) | " + " | ".join(str(s) for s in shown) + " |")
        lines.append("|---|---|" + "---|" * len(shown))
        for i in range(d.sizes["frame"]):
            cells = [f"{100 * float(raw.sel(structure=s)[i]):.1f} / {100 * float(dn.sel(structure=s)[i]):.1f} / "
                     f"{100 * float(av.sel(structure=s)[i]):.1f}" for s in shown]
            lines.append(f"| {i} | {float(d[names.COORD_TIME][i]):.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    (out / "demo_fractions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
