"""Training of the score network on ideal lattices plus Gaussian noise (the paper's Algorithm 2).

Each step draws a reference lattice, a noise level ``sigma ~ U(0, sigma_max)`` (in nearest-neighbour
distances), a small isotropic scale jitter, and minimises ``|| sigma*eps - Delta(r + sigma*eps) ||^2``
(the displacement's cell mean removed: a rigid translation is not observable) with AdamW and a cosine
learning-rate schedule. Checkpoints are written every ``checkpoint_every`` steps and a run resumes from
the checkpoint beside the output file.

Two optional ingredients teach a model what is not noise (issue 22): ``strain_jitter`` deforms each lattice
by a random symmetric strain (elastically loaded crystals and the strain fields around defects are not
noise), and ``library`` mixes in noisy copies of energy-minimised defect cells
(``pipelines/train/defect_library.py``) whose target is the noise alone, so that defect atoms are denoised
towards their relaxed positions instead of lattice sites. ``init_from`` starts from a shipped model's weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from trajden import __version__
from trajden.errors import InputError
from trajden.lattices import COMPOUNDS, STRUCTURES, add_noise, make_crystal
from trajden.model.network import ScoreNet
from trajden.model.package import export_model
from trajden.neighbors import build_graph


@dataclass
class TrainConfig:
    """Training configuration (the YAML file's keys)."""

    name: str = "fcc-bcc-hcp"
    description: str = ""
    structures: list[str] = field(default_factory=lambda: ["fcc", "bcc", "hcp"])
    species: list[str] = field(default_factory=lambda: ["X"])
    cutoff: float = 1.5
    hidden: str = "16x0e+8x1o+4x2e"
    n_layers: int = 3
    lmax: int = 2
    n_basis: int = 8
    radial_hidden: int = 32
    sigma_max: float = 0.13
    scale_jitter: float = 0.03
    atoms_per_cell: int = 256
    cells_per_step: int = 1
    steps: int = 15000
    lr: float = 2e-3
    lr_final: float = 1e-4
    weight_decay: float = 1e-3
    seed: int = 0
    threads: int = 1
    val_every: int = 500
    checkpoint_every: int = 250
    val_sigmas: list[float] = field(default_factory=lambda: [0.05, 0.10, 0.13])
    #: two species: draw each prototype with its roles swapped half of the time (species then symmetric, as in
    #: ``binary``); false for a model whose species are named elements in role order (``silica``: Si, O)
    swap_roles: bool = True
    #: largest component of the random symmetric strain applied to each training cell (0: none)
    strain_jitter: float = 0.0
    #: relaxed defect cells (``.npz`` of ``pipelines/train/defect_library.py``) or tilted silica networks
    #: (``pipelines/train/silica_networks.py``); relative to the YAML file, recorded as written there
    library: str | None = None
    #: fraction of training cells drawn from ``library``
    library_fraction: float = 0.0
    #: loss weight of a library cell's defect atoms (the others and every lattice atom: 1)
    library_defect_weight: float = 1.0
    #: start from this model's weights (a shipped model name or a ``.pt`` path; same architecture)
    init_from: str | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        with open(path) as fh:
            raw = yaml.safe_load(fh) or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"{path}: unknown training keys {sorted(unknown)}")
        cfg = cls(**raw)
        bad = [s for s in cfg.structures if s not in STRUCTURES + COMPOUNDS]
        if bad:
            raise InputError(f"{path}: unknown structures {bad}; known: {STRUCTURES + COMPOUNDS}")
        if len(cfg.species) > 2:
            raise InputError(f"{path}: at most two species (got {cfg.species})")
        if len(cfg.species) == 1 and any(s in COMPOUNDS for s in cfg.structures):
            raise InputError(f"{path}: two-element prototypes need two species (got {cfg.species})")
        if cfg.library is not None:
            lib = Path(cfg.library)
            if not lib.is_absolute():
                lib = Path(path).resolve().parent / lib
            if not lib.is_file():
                raise InputError(f"{path}: library {cfg.library} not found ({lib})",
                                 hint="generate it with python pipelines/train/defect_library.py")
            cfg.library_path = str(lib)  # not a field: the recorded configuration keeps the YAML's relative path
        if cfg.library_fraction and cfg.library is None:
            raise InputError(f"{path}: library_fraction needs a library")
        return cfg


@dataclass
class DefectLibrary:
    """Relaxed defect cells in nearest-neighbour units (:func:`load_library`)."""

    names: list[str]
    positions: list[np.ndarray]
    cells: list[np.ndarray]
    defect: list[np.ndarray]
    sha256: str
    #: each cell's species indices (role order of the prototype; all 0 for a one-element library)
    types: list[np.ndarray] = field(default_factory=list)


def load_library(path: str | os.PathLike) -> DefectLibrary:
    import hashlib

    raw = Path(path).read_bytes()
    with np.load(path) as z:
        counts = z["counts"]
        starts = np.concatenate([[0], np.cumsum(counts)])
        pos = [z["positions"][a:b].astype(np.float64) for a, b in zip(starts[:-1], starts[1:])]
        defect = [z["defect"][a:b].astype(bool) for a, b in zip(starts[:-1], starts[1:])]
        types = ([z["types"][a:b].astype(np.int64) for a, b in zip(starts[:-1], starts[1:])] if "types" in z
                 else [np.zeros(len(p), dtype=np.int64) for p in pos])
        return DefectLibrary([str(n) for n in z["names"]], pos, [c.astype(np.float64) for c in z["cells"]],
                             defect, hashlib.sha256(raw).hexdigest(), types)


def random_strain(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """``I + eps`` with ``eps`` symmetric, components uniform in ``[-amplitude, amplitude]``."""
    e = rng.uniform(-amplitude, amplitude, size=(3, 3))
    return np.eye(3) + 0.5 * (e + e.T)


def build_network(cfg: TrainConfig) -> ScoreNet:
    probe = [make_crystal(s, cfg.atoms_per_cell) for s in cfg.structures]
    nb = []
    for c in probe:
        g = build_graph(c.positions, c.cell, cfg.cutoff)
        nb.append(len(g.src) / c.n_atoms)
    return ScoreNet(
        num_types=len(cfg.species),
        cutoff=cfg.cutoff,
        hidden=cfg.hidden,
        n_layers=cfg.n_layers,
        lmax=cfg.lmax,
        n_basis=cfg.n_basis,
        radial_hidden=cfg.radial_hidden,
        avg_num_neighbors=float(np.mean(nb)),
        output_scale=cfg.sigma_max,
    )


def _roles(cfg: TrainConfig, rng: np.random.Generator, types: np.ndarray) -> np.ndarray:
    """A two-element cell's role indices, swapped with probability 1/2 when ``swap_roles`` (else as given)."""
    if len(cfg.species) != 2 or not cfg.swap_roles:
        return types
    return types if rng.random() < 0.5 else 1 - types


def _species(cfg: TrainConfig, rng: np.random.Generator, crystal) -> np.ndarray:
    """Model species of each atom of a training cell.

    One species: every atom alike. Two species: a prototype's roles, swapped with probability 1/2, so the
    model learns no preference for which element is species 0 (any one-to-one map of the input's two elements
    onto the model's species is then equally valid); a one-element structure gets a random composition
    (pure A, pure B or a random substitutional alloy with ``x_B ~ U(0, 1)``, a third each).
    """
    if len(cfg.species) == 1:
        return crystal.types
    if crystal.structure in COMPOUNDS:
        return _roles(cfg, rng, crystal.types)
    kind = rng.integers(3)
    if kind < 2:
        return np.full(crystal.n_atoms, kind, dtype=np.int64)
    return (rng.random(crystal.n_atoms) < rng.random()).astype(np.int64)


def _sample(cfg: TrainConfig, rng: np.random.Generator, structure: str, sigma: float | None = None,
            library: DefectLibrary | None = None):
    """One noisy training cell: (edge_vec, src, dst, types, target, loss weight per atom). ``structure``
    ``"library:i"``: cell ``i`` of ``library``."""
    if structure.startswith("library:"):
        i = int(structure.split(":", 1)[1])
        pos0, cell = library.positions[i], library.cells[i]
        types = _roles(cfg, rng, library.types[i])
        weight = np.where(library.defect[i], cfg.library_defect_weight, 1.0)
    else:
        crystal = make_crystal(structure, cfg.atoms_per_cell)
        pos0, cell = crystal.positions, crystal.cell
        types = _species(cfg, rng, crystal)
        weight = np.ones(len(pos0))
    scale = 1.0 + cfg.scale_jitter * (2.0 * rng.random() - 1.0)
    deform = scale * (random_strain(rng, cfg.strain_jitter) if cfg.strain_jitter > 0 else np.eye(3))
    pos0 = pos0 @ deform.T
    cell = cell @ deform.T
    if sigma is None:
        sigma = cfg.sigma_max * rng.random()
    noisy, disp = add_noise(pos0, sigma, rng)
    noisy = noisy + rng.random(3) @ cell  # random origin
    disp = disp - disp.mean(axis=0)
    g = build_graph(noisy, cell, cfg.cutoff)
    pos = torch.tensor(noisy, dtype=torch.float32)
    return (
        g.edge_vec(pos),
        g.src,
        g.dst,
        torch.as_tensor(types, dtype=torch.long),
        torch.tensor(disp, dtype=torch.float32),
        torch.tensor(weight, dtype=torch.float32),
    )


def _batch(samples):
    """Concatenate several graphs into one (offset atom indices)."""
    vecs, srcs, dsts, types, targets, weights = [], [], [], [], [], []
    offset = 0
    for vec, src, dst, typ, tgt, w in samples:
        vecs.append(vec)
        srcs.append(src + offset)
        dsts.append(dst + offset)
        types.append(typ)
        targets.append(tgt)
        weights.append(w)
        offset += len(typ)
    return (torch.cat(vecs), torch.cat(srcs), torch.cat(dsts), torch.cat(types), torch.cat(targets),
            torch.cat(weights))


#: most library cells in the validation set (a library of tilted silica networks has hundreds)
VAL_LIBRARY_CELLS = 32


def validation_set(cfg: TrainConfig, library: DefectLibrary | None = None):
    """Fixed validation cells: ``(name, sigma, sample, defect mask or None)``; each structure at each of
    ``val_sigmas``, and library cells at the middle one (their defect atoms marked): every cell of a library
    of up to ``VAL_LIBRARY_CELLS``, that many evenly spaced ones of a larger library."""
    rng = np.random.default_rng(12345)
    out = [(s, sig, _sample(cfg, rng, s, sigma=sig), None) for s in cfg.structures for sig in cfg.val_sigmas]
    if library is not None:
        sig = cfg.val_sigmas[len(cfg.val_sigmas) // 2]
        n = len(library.names)
        pick = range(n) if n <= VAL_LIBRARY_CELLS else np.linspace(0, n - 1, VAL_LIBRARY_CELLS).round().astype(int)
        out += [(f"library:{i}", sig, _sample(cfg, rng, f"library:{i}", sigma=sig, library=library),
                 torch.as_tensor(library.defect[i])) for i in pick]
    return out


@torch.no_grad()
def validate(net: torch.nn.Module, val) -> dict:
    """Per (structure, sigma): RMS of the residual noise after one step relative to the applied noise; the
    library pooled over its cells (``defects@sigma``) and over their defect atoms (``defect-atoms@sigma``)."""
    net.eval()
    out = {}
    losses = []
    pooled: dict[str, list] = {}
    for s, sig, (vec, src, dst, typ, tgt, _), defect in val:
        pred = net(vec, src, dst, typ)
        res, ref = ((pred - tgt) ** 2).sum(-1), (tgt**2).sum(-1)
        if defect is not None:
            pooled.setdefault(f"defects@{sig:g}", []).append((res, ref))
            pooled.setdefault(f"defect-atoms@{sig:g}", []).append((res[defect], ref[defect]))
            continue
        err = res.mean().item()
        losses.append(err)
        out[f"{s}@{sig:g}"] = math.sqrt(err / max(ref.mean().item(), 1e-12))
    for key, parts in pooled.items():
        num = torch.cat([a for a, _ in parts]).sum().item()
        den = torch.cat([b for _, b in parts]).sum().item()
        if den > 0:  # a library without defect atoms (tilted silica networks) has no defect-atoms entry
            out[key] = math.sqrt(num / den)
    net.train()
    out["loss"] = float(np.mean(losses))
    return out


def _init_weights(net: torch.nn.Module, source: str) -> None:
    """Copy a shipped (or given) model's weights into ``net`` (the same architecture)."""
    from trajden.model.package import resolve_model

    path, _ = resolve_model(source)
    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"init_from {source}: its architecture differs from this configuration's",
                         hint="use the same hidden, n_layers, cutoff and species as that model") from err


def train(cfg: TrainConfig, out: str | os.PathLike, log=print, max_steps_this_run: int | None = None) -> dict:
    """Train (or resume) and export the TorchScript model to ``out``; return the final validation."""
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    ckpt_path = out.with_suffix(out.suffix + ".ckpt")
    torch.manual_seed(cfg.seed)
    net = build_network(cfg)
    if cfg.init_from:
        _init_weights(net, cfg.init_from)
    library = load_library(getattr(cfg, "library_path", cfg.library)) if cfg.library else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr_final)
    rng = np.random.default_rng(cfg.seed)
    step, history, elapsed = 0, [], 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)  # our own checkpoint file
        if ck["config"] != asdict(cfg):
            raise InputError(f"{ckpt_path}: checkpoint was written with another configuration",
                             hint="use the configuration it was written with, or remove the checkpoint to start over")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, history, elapsed = ck["step"], ck["history"], ck["elapsed"]
        log(f"resuming {cfg.name} at step {step}/{cfg.steps}")
    n_params = sum(p.numel() for p in net.parameters())
    log(f"{cfg.name}: {n_params} parameters, structures {cfg.structures}, {cfg.steps} steps")
    val = validation_set(cfg, library)

    def save_ckpt():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "config": asdict(cfg), "net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                "history": history, "elapsed": elapsed,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)

    net.train()
    t_start = time.time() - elapsed
    running = []
    stop_at = cfg.steps if max_steps_this_run is None else min(cfg.steps, step + max_steps_this_run)
    while step < stop_at:
        structures = [cfg.structures[(step * cfg.cells_per_step + k) % len(cfg.structures)]
                      for k in range(cfg.cells_per_step)]
        if library is not None and cfg.library_fraction > 0:
            structures = [f"library:{rng.integers(len(library.names))}" if rng.random() < cfg.library_fraction
                          else s for s in structures]
        vec, src, dst, typ, tgt, weight = _batch([_sample(cfg, rng, s, library=library) for s in structures])
        pred = net(vec, src, dst, typ)
        loss = (((pred - tgt) ** 2).sum(-1) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        running.append(loss.item())
        if step % cfg.val_every == 0 or step == cfg.steps:
            v = validate(net, val)
            elapsed = time.time() - t_start
            v.update(step=step, train_loss=float(np.mean(running)), elapsed_s=elapsed, lr=sched.get_last_lr()[0])
            history.append(v)
            running = []
            rel = " ".join(f"{k}={v[k]:.3f}" for k in v if "@" in k)
            log(f"step {step}/{cfg.steps} {elapsed/60:.1f} min train {v['train_loss']:.2e} val {v['loss']:.2e} | {rel}")
        if step % cfg.checkpoint_every == 0 or step == stop_at:
            elapsed = time.time() - t_start
            save_ckpt()
    if step < cfg.steps:
        return {"step": step, "done": False}

    from e3nn.util.jit import script

    net.eval()
    scripted = script(net)
    final = history[-1] if history else validate(net, val)
    metadata = {
        "name": cfg.name,
        "description": cfg.description,
        "cutoff": cfg.cutoff,
        "nn_distance": 1.0,
        "n_layers": cfg.n_layers,
        "species": cfg.species,
        "structures": cfg.structures,
        "sigma_max": cfg.sigma_max,
        "n_parameters": n_params,
        "training_config": asdict(cfg),
        **({"defect_library": {"file": Path(cfg.library).name, "cells": library.names, "sha256": library.sha256}}
           if library else {}),
        "training_steps": step,
        "training_time_s": elapsed,
        "final_validation": final,
        "trajden_version": __version__,
        "torch_version": torch.__version__,
        "contract": "forward(edge_vec[E,3], edge_src[E], edge_dst[E], types[N]) -> displacement[N,3]; "
        "edge_vec = r[src] - r[dst] in units where nn_distance is the nearest-neighbour distance",
    }
    digest = export_model(scripted, metadata, out)
    (out.parent / (out.stem + ".history.json")).write_text(json.dumps(history, indent=1))
    log(f"wrote {out} sha256 {digest}")
    return {"step": step, "done": True, "sha256": digest, "validation": final}
