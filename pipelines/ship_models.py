"""Copy trained models into the package and record their sha256 in trajden/models/registry.json.

    python pipelines/ship_models.py fcc-bcc-hcp=/path/fcc-bcc-hcp.pt dc3=/path/dc3.pt

A model is accepted only if it loads as a trajden model whose metadata name matches.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from trajden.model.package import load_model

MODELS = Path(__file__).resolve().parents[1] / "trajden" / "models"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    reg_path = MODELS / "registry.json"
    registry = json.loads(reg_path.read_text()) if reg_path.exists() else {}
    for item in argv:
        name, src = item.split("=", 1)
        m = load_model(src)
        if m.name != name:
            raise SystemExit(f"{src}: metadata name {m.name!r} != {name!r}")
        dest = MODELS / f"{name}.pt"
        shutil.copyfile(src, dest)
        md = m.metadata
        registry[name] = {
            "file": dest.name,
            "sha256": m.sha256,
            "description": md.get("description", ""),
            "structures": md["structures"],
            "n_parameters": md.get("n_parameters"),
            "training_steps": md.get("training_steps"),
            "training_time_s": round(float(md.get("training_time_s", 0.0)), 1),
        }
        print(f"shipped {name}: {dest} sha256 {m.sha256}")
    reg_path.write_text(json.dumps(registry, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
