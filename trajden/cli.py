"""The ``trajden`` command line: ``process``, ``train``, ``fractions``, ``plot``, ``export``, ``models``."""

from __future__ import annotations

import argparse
import sys

from trajden import __version__


class UserError(Exception):
    """An error caused by the input, reported as one line (no traceback unless --debug)."""


def _cmd_train(args) -> int:
    from trajden.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.threads is not None:
        cfg.threads = args.threads
    result = train(cfg, args.out, max_steps_this_run=args.max_steps_this_run)
    return 0 if result["done"] else 3


def _cmd_models(args) -> int:
    from trajden.model.package import load_model, shipped_models

    for name, entry in shipped_models().items():
        m = load_model(name)
        md = m.metadata
        print(f"{name:14s} sha256 {m.sha256[:12]}  structures {','.join(md['structures'])}  "
              f"cutoff {md['cutoff']} nn  params {md.get('n_parameters')}  {entry.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trajden",
        description="Score-based denoising of MD trajectories for structure identification (a-CNA, PTM).",
    )
    p.add_argument("--version", action="version", version=f"trajden {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a denoiser on ideal lattices plus noise, export TorchScript")
    t.add_argument("config", help="training YAML (see pipelines/train/)")
    t.add_argument("--out", required=True, help="model file to write (a checkpoint OUT.ckpt is kept beside it)")
    t.add_argument("--steps", type=int, help="override the number of optimisation steps")
    t.add_argument("--threads", type=int, help="torch threads")
    t.add_argument("--max-steps-this-run", type=int, help="stop after this many steps (resume later)")
    t.set_defaults(func=_cmd_train)

    m = sub.add_parser("models", help="list the shipped models")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("trajden: interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, OSError) as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"trajden: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
